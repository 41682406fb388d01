"""Helpers of the end-to-end tests: a shared project with an owner and a member of some role, each logged in."""

from dataclasses import dataclass
from typing import Any

import httpx

from tests.conftest import bearer, password_login, signup

HOOK_URL = "https://hooks.example.com/keyledger"


def login(http: httpx.Client, account: dict[str, Any], **extra: str) -> str:
    response = password_login(http, account, **extra)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def short_lived_token(http: httpx.Client, account: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A client with 5-second access tokens, and one of its tokens."""
    owner = login(http, account)
    made = http.post(f"/v1/projects/{account['project']['id']}/clients", json={"name": "short", "access_token_ttl": 5},
                     headers=bearer(owner))
    assert made.status_code == 201, made.text
    client = made.json()
    issued = http.post("/oauth2/token", data={"grant_type": "client_credentials"},
                       auth=(client["client_id"], client["client_secret"]))
    assert issued.status_code == 200, issued.text
    return issued.json()["access_token"], {**account, "client": client}


@dataclass
class Team:
    """A project with its owner and one member of some role, each logged in."""

    http: httpx.Client
    owner: dict[str, Any]
    member: dict[str, Any]
    owner_token: str
    member_token: str

    @property
    def project(self) -> str:
        return str(self.owner["project"]["id"])

    @property
    def member_id(self) -> str:
        return str(self.member["user"]["id"])

    def url(self, path: str = "") -> str:
        return f"/v1/projects/{self.project}{path}"

    def new_user(self) -> dict[str, Any]:
        return signup(self.http, "Elsewhere")

    def add(self, account: dict[str, Any], role: str) -> httpx.Response:
        return self.http.post(self.url("/members"), json={"email": account["user"]["email"], "role": role},
                              headers=bearer(self.owner_token))

    def added(self, role: str = "developer") -> str:
        """A fresh member of the team's project with ``role``, added by the owner; returns their user id."""
        other = self.new_user()
        response = self.add(other, role)
        assert response.status_code == 201, response.text
        return str(other["user"]["id"])

    def new_client(self, scope: str | None = None) -> dict[str, Any]:
        body = {"name": "k"} if scope is None else {"name": "k", "scope": scope}
        made = self.http.post(self.url("/clients"), json=body, headers=bearer(self.owner_token))
        assert made.status_code == 201, made.text
        return dict(made.json())

    def new_webhook(self) -> str:
        """A webhook of the team's project, made by the owner; returns its id."""
        made = self.http.post(self.url("/webhooks"), json={"url": HOOK_URL, "event_types": ["member.added"]},
                              headers=bearer(self.owner_token))
        assert made.status_code == 201, made.text
        return str(made.json()["id"])

    def client_token(self, scope: str) -> str:
        """A token of a new client of the project holding ``scope``."""
        made = self.new_client(scope)
        response = self.http.post("/oauth2/token", data={"grant_type": "client_credentials"},
                                  auth=(made["client_id"], made["client_secret"]))
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def members(self, token: str | None = None) -> dict[str, str]:
        """The project's members as ``{user_id: role}``, all pages."""
        found: dict[str, str] = {}
        params: dict[str, Any] = {"limit": 200}
        while True:
            page = self.http.get(self.url("/members"), params=params, headers=bearer(token or self.owner_token))
            assert page.status_code == 200, page.text
            found.update({m["user_id"]: m["role"] for m in page.json()["items"]})
            if page.json()["next_cursor"] is None:
                return found
            params["cursor"] = page.json()["next_cursor"]


def make_team(http: httpx.Client, role: str) -> Team:
    owner, member = signup(http, "Shared"), signup(http, "Own")
    team = Team(http=http, owner=owner, member=member, owner_token=login(http, owner), member_token="")
    assert team.add(member, role).status_code == 201
    team.member_token = login(http, member)
    return team

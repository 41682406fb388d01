"""Members and roles over HTTP, and every role against every project endpoint, generated from the permission table."""

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from domain.scopes import ROLE_PERMISSIONS, Role
from tests.conftest import client_login, password_login, signup

pytestmark = pytest.mark.e2e


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def login(http: httpx.Client, account: dict[str, Any]) -> str:
    return str(password_login(http, account).json()["access_token"])


@dataclass
class Team:
    """A project with its owner and one member of ``role``, each logged in."""

    http: httpx.Client
    owner: dict[str, Any]
    member: dict[str, Any]
    owner_token: str
    member_token: str

    @property
    def project(self) -> str:
        return str(self.owner["project"]["id"])

    def url(self, path: str = "") -> str:
        return f"/v1/projects/{self.project}{path}"

    def new_user(self) -> dict[str, Any]:
        return signup(self.http, "Elsewhere")

    def add(self, account: dict[str, Any], role: str) -> httpx.Response:
        return self.http.post(self.url("/members"), json={"email": account["user"]["email"], "role": role},
                              headers=bearer(self.owner_token))

    def new_client(self) -> dict[str, Any]:
        made = self.http.post(self.url("/clients"), json={"name": "k"}, headers=bearer(self.owner_token))
        assert made.status_code == 201, made.text
        return dict(made.json())


def make_team(http: httpx.Client, role: str) -> Team:
    owner, member = signup(http, "Shared"), signup(http, "Own")
    team = Team(http=http, owner=owner, member=member, owner_token=login(http, owner), member_token="")
    assert team.add(member, role).status_code == 201
    team.member_token = login(http, member)
    return team


Call = Callable[[Team, str], httpx.Response]

# Each project endpoint, the permission it needs, and how to call it as ``token`` (fresh targets per call).
ENDPOINTS: dict[str, tuple[str, Call]] = {
    "read project": ("project:read", lambda t, tok: t.http.get(t.url(), headers=bearer(tok))),
    "list members": ("members:read", lambda t, tok: t.http.get(t.url("/members"), headers=bearer(tok))),
    "add member": ("members:write", lambda t, tok: t.http.post(
        t.url("/members"), json={"email": t.new_user()["user"]["email"], "role": "developer"}, headers=bearer(tok))),
    "change member": ("members:write", lambda t, tok: t.http.patch(
        t.url(f"/members/{added(t)}"), json={"role": "auditor"}, headers=bearer(tok))),
    "remove member": ("members:write", lambda t, tok: t.http.delete(t.url(f"/members/{added(t)}"),
                                                                    headers=bearer(tok))),
    "list clients": ("clients:read", lambda t, tok: t.http.get(t.url("/clients"), headers=bearer(tok))),
    "create client": ("clients:write", lambda t, tok: t.http.post(t.url("/clients"), json={"name": "x"},
                                                                  headers=bearer(tok))),
    "rotate secret": ("clients:write", lambda t, tok: t.http.post(
        t.url(f"/clients/{t.new_client()['client_id']}/rotate-secret"), json={}, headers=bearer(tok))),
    "delete client": ("clients:write", lambda t, tok: t.http.delete(t.url(f"/clients/{t.new_client()['client_id']}"),
                                                                    headers=bearer(tok))),
    "list tokens": ("tokens:read", lambda t, tok: t.http.get(t.url("/tokens"), headers=bearer(tok))),
    "revoke tokens": ("tokens:revoke", lambda t, tok: t.http.post(
        t.url("/tokens/revoke"), json={"client_id": t.owner["client"]["client_id"]}, headers=bearer(tok))),
}


def added(team: Team) -> str:
    """A fresh developer of the team's project, to change or remove."""
    other = team.new_user()
    assert team.add(other, "developer").status_code == 201
    return str(other["user"]["id"])


@pytest.fixture(scope="module")
def teams(live_server: str) -> dict[str, Team]:
    client = httpx.Client(base_url=live_server, timeout=30)
    return {role.value: make_team(client, role.value) for role in Role}


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
@pytest.mark.parametrize("role", [r.value for r in Role])
def test_each_role_against_each_endpoint(teams: dict[str, Team], role: str, endpoint: str) -> None:
    permission, call = ENDPOINTS[endpoint]
    response = call(teams[role], teams[role].member_token)
    if permission in ROLE_PERMISSIONS[Role(role)]:
        assert response.status_code in (200, 201, 204), response.text
    else:
        assert response.status_code == 403, response.text
        assert response.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_each_endpoint_is_404_for_a_non_member_and_for_another_projects_client(
        teams: dict[str, Team], endpoint: str) -> None:
    team = teams["owner"]
    outsider = teams["admin"]  # owner of another project, admin here: use their own project's owner token
    _, call = ENDPOINTS[endpoint]
    stranger = login(team.http, outsider.member)  # a member of their own project only
    assert call(team, stranger).status_code == 404
    foreign_key = client_login(team.http, outsider.owner).json()["access_token"]
    assert call(team, foreign_key).status_code == 404


def test_members_are_listed_with_emails_in_pages(http: httpx.Client) -> None:
    team = make_team(http, "auditor")
    extra = [team.new_user() for _ in range(3)]
    for account in extra:
        assert team.add(account, "developer").status_code == 201
    seen: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        page = http.get(team.url("/members"), params=params, headers=bearer(team.member_token)).json()
        seen.extend(page["items"])
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert [m["email"] for m in seen] == [a["user"]["email"] for a in (team.owner, team.member, *extra)]
    assert [m["role"] for m in seen] == ["owner", "auditor", "developer", "developer", "developer"]


def test_changes_take_effect_at_once_for_tokens_already_issued(http: httpx.Client) -> None:
    team = make_team(http, "developer")
    token = team.member_token
    target = team.new_user()
    body = {"email": target["user"]["email"], "role": "auditor"}
    assert http.post(team.url("/members"), json=body, headers=bearer(token)).status_code == 403
    promoted = http.patch(team.url(f"/members/{team.member['user']['id']}"), json={"role": "admin"},
                          headers=bearer(team.owner_token))
    assert promoted.status_code == 200 and promoted.json()["role"] == "admin"
    assert http.post(team.url("/members"), json=body, headers=bearer(token)).status_code == 201
    assert http.delete(team.url(f"/members/{team.member['user']['id']}"),
                       headers=bearer(team.owner_token)).status_code == 204
    assert http.get(team.url(), headers=bearer(token)).status_code == 404


def test_only_owners_manage_owners_and_one_owner_always_stays(http: httpx.Client) -> None:
    team = make_team(http, "admin")
    owner_id = team.owner["user"]["id"]
    admin = bearer(team.member_token)
    newcomer = team.new_user()
    assert http.post(team.url("/members"), json={"email": newcomer["user"]["email"], "role": "owner"},
                     headers=admin).status_code == 403
    assert http.patch(team.url(f"/members/{owner_id}"), json={"role": "developer"}, headers=admin).status_code == 403
    assert http.delete(team.url(f"/members/{owner_id}"), headers=admin).status_code == 403
    last = http.patch(team.url(f"/members/{owner_id}"), json={"role": "admin"}, headers=bearer(team.owner_token))
    assert last.status_code == 409
    assert http.delete(team.url(f"/members/{owner_id}"), headers=bearer(team.owner_token)).status_code == 409
    # With a second owner, the first may leave; a member may always leave.
    assert http.patch(team.url(f"/members/{team.member['user']['id']}"), json={"role": "owner"},
                      headers=bearer(team.owner_token)).status_code == 200
    assert http.delete(team.url(f"/members/{owner_id}"), headers=bearer(team.owner_token)).status_code == 204
    auditor = make_team(http, "auditor")
    assert http.delete(auditor.url(f"/members/{auditor.member['user']['id']}"),
                       headers=bearer(auditor.member_token)).status_code == 204


@pytest.mark.parametrize(("method", "path", "body"), [
    ("post", "/members", {"email": "nobody-registered@example.com", "role": "developer"}),
    ("post", "/members", {"email": "not-an-email", "role": "developer"}),
    ("post", "/members", {"email": "a@example.com", "role": "king"}),
    ("post", "/members", {"email": "a@example.com", "role": "developer", "extra": 1}),
    ("patch", "/members/not-a-uuid", {"role": "admin"}),
    ("patch", f"/members/{uuid.uuid4()}", {"role": "admin"}),
    ("delete", f"/members/{uuid.uuid4()}", None),
])
def test_bad_member_requests_are_4xx_problems(http: httpx.Client, method: str, path: str,
                                              body: dict[str, Any] | None) -> None:
    team = make_team(http, "developer")
    kwargs: dict[str, Any] = {"headers": bearer(team.owner_token)}
    if body is not None:
        kwargs["json"] = body
    response = getattr(http, method)(team.url(path), **kwargs)
    assert response.status_code in (400, 404), response.text
    assert response.headers["content-type"].startswith("application/problem+json")


def test_adding_an_existing_member_is_409(http: httpx.Client) -> None:
    team = make_team(http, "developer")
    assert team.add(team.member, "auditor").status_code == 409

"""The webhook routes over HTTP against a live server that refuses private targets (the production default):
registration with the secret shown once, listings, removal, roles, two tenants, and problem details for bad input."""

from typing import Any

import httpx
import pytest

from tests.conftest import bearer, client_login
from tests.e2e.support import Team, login, make_team
from tests.e2e.test_errors import problem
from tests.e2e.test_no_secrets_at_rest import dump_database

pytestmark = pytest.mark.e2e

URL = "https://hooks.example.com/keyledger?channel=ops"


def create(team: Team, token: str | None = None, **body: Any) -> httpx.Response:
    payload = {"url": URL, "event_types": ["member.added", "client.revoked"], **body}
    return team.http.post(team.url("/webhooks"), json=payload, headers=bearer(token or team.owner_token))


@pytest.fixture
def team(http: httpx.Client) -> Team:
    return make_team(http, "developer")


def test_an_owner_registers_lists_and_removes_a_webhook(team: Team, server_database_url: str) -> None:
    made = create(team)
    assert made.status_code == 201, made.text
    assert made.headers["cache-control"] == "no-store"
    hook = made.json()
    secret = hook["secret"]
    assert secret.startswith("whsec_") and hook["secret_hint"].endswith(secret[-4:])
    assert hook["event_types"] == ["client.revoked", "member.added"] and hook["url"] == URL
    listing = team.http.get(team.url("/webhooks"), headers=bearer(team.owner_token))
    assert listing.status_code == 200
    assert [w["id"] for w in listing.json()["items"]] == [hook["id"]] and secret not in listing.text
    assert "secret" not in listing.json()["items"][0]
    deliveries = team.http.get(team.url(f"/webhooks/{hook['id']}/deliveries"), headers=bearer(team.owner_token))
    assert deliveries.status_code == 200 and deliveries.json() == {"items": [], "next_cursor": None}
    dump = dump_database(server_database_url)
    assert hook["id"] in dump and secret not in dump and secret[6:26] not in dump
    removed = team.http.delete(team.url(f"/webhooks/{hook['id']}"), headers=bearer(team.owner_token))
    assert removed.status_code == 204
    assert team.http.get(team.url("/webhooks"), headers=bearer(team.owner_token)).json()["items"] == []
    problem(team.http.delete(team.url(f"/webhooks/{hook['id']}"), headers=bearer(team.owner_token)), 404)
    problem(team.http.get(team.url(f"/webhooks/{hook['id']}/deliveries"), headers=bearer(team.owner_token)), 404)


def test_listings_are_paginated(team: Team) -> None:
    made = {create(team).json()["id"] for _ in range(3)}
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        page = team.http.get(team.url("/webhooks"), params=params, headers=bearer(team.owner_token))
        assert page.status_code == 200, page.text
        seen += [w["id"] for w in page.json()["items"]]
        if page.json()["next_cursor"] is None:
            break
        params["cursor"] = page.json()["next_cursor"]
    assert set(seen) == made and len(seen) == 3


@pytest.mark.parametrize(("role", "may_write"), [("admin", True), ("developer", False), ("auditor", False)])
def test_owners_and_admins_manage_webhooks_others_only_read(http: httpx.Client, role: str, may_write: bool) -> None:
    team = make_team(http, role)
    made = create(team, team.member_token)
    assert made.status_code == (201 if may_write else 403), made.text
    hook = create(team).json()["id"]
    listing = team.http.get(team.url("/webhooks"), headers=bearer(team.member_token))
    assert listing.status_code == 200 and hook in listing.text
    # The URL may carry the receiver's credential: whole for those who may manage webhooks, an origin for the others.
    assert {w["url"] for w in listing.json()["items"]} == {URL if may_write else "https://hooks.example.com/..."}
    assert may_write or "channel=ops" not in listing.text
    deleted = team.http.delete(team.url(f"/webhooks/{hook}"), headers=bearer(team.member_token))
    assert deleted.status_code == (204 if may_write else 403)


def test_another_project_sees_no_webhook_of_this_one(http: httpx.Client) -> None:
    alpha, beta = make_team(http, "developer"), make_team(http, "developer")
    hook = create(alpha).json()["id"]
    beta_key = client_login(http, beta.owner).json()["access_token"]
    alphas_before = http.get(alpha.url("/webhooks"), headers=bearer(alpha.owner_token)).json()["items"]
    for token in (beta.owner_token, beta_key):
        problem(http.get(alpha.url("/webhooks"), headers=bearer(token)), 404)
        problem(create(alpha, token), 404)
        problem(http.delete(alpha.url(f"/webhooks/{hook}"), headers=bearer(token)), 404)
        problem(http.get(alpha.url(f"/webhooks/{hook}/deliveries"), headers=bearer(token)), 404)
    # Alpha's webhook id under beta's own project: not found there either, and still alive in alpha.
    problem(http.delete(beta.url(f"/webhooks/{hook}"), headers=bearer(beta.owner_token)), 404)
    problem(http.get(beta.url(f"/webhooks/{hook}/deliveries"), headers=bearer(beta.owner_token)), 404)
    assert hook not in http.get(beta.url("/webhooks"), headers=bearer(beta.owner_token)).text
    # Nothing was written to alpha by the refused calls: the same one webhook, not deleted, none added.
    assert http.get(alpha.url("/webhooks"), headers=bearer(alpha.owner_token)).json()["items"] == alphas_before
    assert [w["id"] for w in alphas_before] == [hook]


@pytest.mark.parametrize("body", [
    {"url": "http://hooks.example.com/x"}, {"url": "https://127.0.0.1/x"}, {"url": "https://10.0.0.7/x"},
    {"url": "https://[::1]:8443/x"}, {"url": "https://169.254.169.254/latest/meta-data"},
    {"url": "https://localhost/x"}, {"url": "https://user:pass@hooks.example.com/x"}, {"url": "not a url"},
    {"url": "https://hooks.example.com/" + "a" * 2100}, {"url": ""}, {"url": 7},
    {"event_types": []}, {"event_types": ["member.joined"]}, {"event_types": "member.added"},
    {"event_types": ["member.added"] * 21}, {"secret": "whsec_mine"},
])
def test_bad_registrations_get_problem_details(team: Team, body: dict[str, Any]) -> None:
    problem(create(team, **body), 400)
    assert team.http.get(team.url("/webhooks"), headers=bearer(team.owner_token)).json()["items"] == []


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b'{"url": null, "event_types": null}', b"\xff\xfe"])
def test_malformed_bodies_get_problem_details(team: Team, raw: bytes) -> None:
    response = team.http.post(team.url("/webhooks"), content=raw,
                              headers={**bearer(team.owner_token), "content-type": "application/json"})
    problem(response, 400)


def test_bad_paging_and_ids_are_refused_cleanly(team: Team) -> None:
    headers = bearer(team.owner_token)
    problem(team.http.get(team.url("/webhooks"), params={"cursor": "garbage"}, headers=headers), 400)
    problem(team.http.get(team.url("/webhooks"), params={"limit": 0}, headers=headers), 400)
    hook = create(team).json()["id"]
    problem(team.http.get(team.url(f"/webhooks/{hook}/deliveries"), params={"cursor": "x!"}, headers=headers), 400)
    assert team.http.delete(team.url("/webhooks/not-a-uuid"), headers=headers).status_code in (400, 404, 405)
    problem(team.http.get(team.url("/webhooks/00000000-0000-0000-0000-000000000000/deliveries"), headers=headers),
            404)


def test_a_token_is_required(team: Team) -> None:
    assert team.http.get(team.url("/webhooks")).status_code == 401
    assert team.http.post(team.url("/webhooks"), json={"url": URL, "event_types": ["member.added"]}).status_code == 401


def test_a_member_who_leaves_loses_the_webhooks_at_once(http: httpx.Client) -> None:
    team = make_team(http, "admin")
    assert create(team, team.member_token).status_code == 201
    removed = http.delete(team.url(f"/members/{team.member_id}"), headers=bearer(team.owner_token))
    assert removed.status_code == 204
    problem(http.get(team.url("/webhooks"), headers=bearer(team.member_token)), 404)
    assert login(http, team.member)

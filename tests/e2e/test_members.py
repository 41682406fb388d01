"""Members and roles over HTTP: listing, adding, changing, removing; only owners manage owners, a project keeps an
owner, changes take effect at once for tokens already issued, two tenants, bad input. (Every role against every
route, generated from the permission table, is in ``test_role_table.py``.)"""

import uuid
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.e2e.support import bearer, login, make_team

pytestmark = pytest.mark.e2e


def test_members_are_listed_with_emails_in_pages_in_the_order_they_joined(http: httpx.Client) -> None:
    team = make_team(http, "auditor")
    extra = [team.new_user() for _ in range(3)]
    for account in extra:
        assert team.add(account, "developer").status_code == 201
    seen: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        page = http.get(team.url("/members"), params=params, headers=bearer(team.member_token))
        assert page.status_code == 200, page.text
        assert len(page.json()["items"]) <= 2
        seen.extend(page.json()["items"])
        if page.json()["next_cursor"] is None:
            break
        params["cursor"] = page.json()["next_cursor"]
    accounts = (team.owner, team.member, *extra)
    assert [m["email"] for m in seen] == [a["user"]["email"] for a in accounts]
    assert [m["user_id"] for m in seen] == [a["user"]["id"] for a in accounts]
    assert [m["role"] for m in seen] == ["owner", "auditor", "developer", "developer", "developer"]
    assert [datetime.fromisoformat(m["since"]) for m in seen] == sorted(datetime.fromisoformat(m["since"])
                                                                        for m in seen)


def test_each_change_answers_the_member_and_shows_at_once(http: httpx.Client) -> None:
    team = make_team(http, "developer")
    newcomer = team.new_user()
    added = http.post(team.url("/members"), json={"email": newcomer["user"]["email"].upper(), "role": "auditor"},
                      headers=bearer(team.owner_token))
    assert added.status_code == 201, added.text
    body = added.json()
    assert {k: body[k] for k in ("user_id", "email", "role")} == {
        "user_id": newcomer["user"]["id"], "email": newcomer["user"]["email"], "role": "auditor"}
    assert team.members()[newcomer["user"]["id"]] == "auditor"
    me = http.get("/v1/me", headers=bearer(login(http, newcomer))).json()
    assert {"project_id": team.project, "role": "auditor"} in me["memberships"]
    changed = http.patch(team.url(f"/members/{body['user_id']}"), json={"role": "admin"},
                         headers=bearer(team.owner_token))
    assert changed.status_code == 200, changed.text
    assert changed.json() == {**body, "role": "admin"}  # "since" is when they joined, not when the role changed
    same = http.patch(team.url(f"/members/{body['user_id']}"), json={"role": "admin"},
                      headers=bearer(team.owner_token))
    assert same.status_code == 200 and same.json() == changed.json()
    assert team.members()[newcomer["user"]["id"]] == "admin"
    removed = http.delete(team.url(f"/members/{body['user_id']}"), headers=bearer(team.owner_token))
    assert removed.status_code == 204 and removed.content == b""
    assert newcomer["user"]["id"] not in team.members()
    assert http.delete(team.url(f"/members/{body['user_id']}"), headers=bearer(team.owner_token)).status_code == 404


def test_changes_take_effect_at_once_for_tokens_already_issued(http: httpx.Client) -> None:
    team = make_team(http, "developer")
    token = team.member_token
    body = {"email": team.new_user()["user"]["email"], "role": "auditor"}
    assert http.post(team.url("/members"), json=body, headers=bearer(token)).status_code == 403
    promoted = http.patch(team.url(f"/members/{team.member_id}"), json={"role": "admin"},
                          headers=bearer(team.owner_token))
    assert promoted.status_code == 200 and promoted.json()["role"] == "admin"
    assert http.post(team.url("/members"), json=body, headers=bearer(token)).status_code == 201
    assert http.patch(team.url(f"/members/{team.member_id}"), json={"role": "auditor"},
                      headers=bearer(team.owner_token)).status_code == 200
    later = {"email": team.new_user()["user"]["email"], "role": "auditor"}
    assert http.post(team.url("/members"), json=later, headers=bearer(token)).status_code == 403
    assert http.delete(team.url(f"/members/{team.member_id}"), headers=bearer(team.owner_token)).status_code == 204
    for path in ("", "/members", "/clients"):
        assert http.get(team.url(path), headers=bearer(token)).status_code == 404
    assert http.post(team.url("/members"), json=later, headers=bearer(token)).status_code == 404


def test_only_owners_manage_owners_and_one_owner_always_stays(http: httpx.Client) -> None:
    team = make_team(http, "admin")
    owner_id, admin, owner = team.owner["user"]["id"], bearer(team.member_token), bearer(team.owner_token)
    newcomer = team.new_user()
    refused = http.post(team.url("/members"), json={"email": newcomer["user"]["email"], "role": "owner"},
                        headers=admin)
    assert refused.status_code == 403
    assert "owners" in refused.json()["detail"]
    assert http.patch(team.url(f"/members/{owner_id}"), json={"role": "developer"}, headers=admin).status_code == 403
    assert http.patch(team.url(f"/members/{team.member_id}"), json={"role": "owner"}, headers=admin).status_code == 403
    assert http.delete(team.url(f"/members/{owner_id}"), headers=admin).status_code == 403
    for last in (http.patch(team.url(f"/members/{owner_id}"), json={"role": "admin"}, headers=owner),
                 http.delete(team.url(f"/members/{owner_id}"), headers=owner)):
        assert last.status_code == 409, last.text
        assert last.headers["content-type"].startswith("application/problem+json")
        assert "owner" in last.json()["detail"]
    assert team.members()[owner_id] == "owner"
    # With a second owner, the first may step down or leave.
    assert http.patch(team.url(f"/members/{team.member_id}"), json={"role": "owner"}, headers=owner).status_code == 200
    assert http.delete(team.url(f"/members/{owner_id}"), headers=owner).status_code == 204
    assert team.members(team.member_token) == {team.member_id: "owner"}


@pytest.mark.parametrize("role", ["developer", "auditor"])
def test_a_member_may_leave_with_a_token_scoped_for_it(http: httpx.Client, role: str) -> None:
    team = make_team(http, role)
    read_only = login(http, team.member, scope="project:read members:read")
    refused = http.delete(team.url(f"/members/{team.member_id}"), headers=bearer(read_only))
    assert refused.status_code == 403
    left = http.delete(team.url(f"/members/{team.member_id}"), headers=bearer(team.member_token))
    assert left.status_code == 204, left.text
    assert http.get(team.url(), headers=bearer(team.member_token)).status_code == 404
    assert team.members() == {team.owner["user"]["id"]: "owner"}


def test_a_token_without_the_members_write_scope_cannot_change_members(http: httpx.Client) -> None:
    team = make_team(http, "developer")
    narrow = bearer(login(http, team.owner, scope="project:read members:read"))
    assert http.get(team.url("/members"), headers=narrow).status_code == 200
    assert http.post(team.url("/members"), json={"email": team.new_user()["user"]["email"], "role": "auditor"},
                     headers=narrow).status_code == 403
    assert http.patch(team.url(f"/members/{team.member_id}"), json={"role": "admin"}, headers=narrow).status_code == 403
    assert http.delete(team.url(f"/members/{team.member_id}"), headers=narrow).status_code == 403


def test_member_routes_are_isolated_between_two_tenants(http: httpx.Client) -> None:
    a, b = make_team(http, "developer"), make_team(http, "developer")
    a_key = a.client_token("project:read members:read members:write")
    b_member = b.member_id
    newcomer = a.new_user()["user"]["email"]
    assert http.get(a.url("/members"), headers=bearer(a_key)).status_code == 200
    for token in (a.owner_token, a_key):
        assert http.get(b.url("/members"), headers=bearer(token)).status_code == 404
        assert http.post(b.url("/members"), json={"email": newcomer, "role": "developer"},
                         headers=bearer(token)).status_code == 404
        # B's member, named through B's project or through A's own, is not found.
        for team in (b, a):
            assert http.patch(team.url(f"/members/{b_member}"), json={"role": "admin"},
                              headers=bearer(token)).status_code == 404
            assert http.delete(team.url(f"/members/{b_member}"), headers=bearer(token)).status_code == 404
    assert b.members() == {b.owner["user"]["id"]: "owner", b_member: "developer"}
    assert b_member not in a.members()
    # A's key adds someone to A, never to B.
    assert http.post(a.url("/members"), json={"email": newcomer, "role": "developer"},
                     headers=bearer(a_key)).status_code == 201
    assert newcomer not in str(b.members())


def test_adding_a_member_again_or_an_unknown_email(http: httpx.Client) -> None:
    team = make_team(http, "developer")
    again = team.add(team.member, "auditor")
    assert again.status_code == 409
    assert again.headers["content-type"].startswith("application/problem+json")
    unknown = http.post(team.url("/members"), json={"email": f"nobody-{uuid.uuid4().hex}@example.com",
                                                    "role": "developer"}, headers=bearer(team.owner_token))
    assert unknown.status_code == 404
    assert unknown.json()["detail"] == "no registered user with this email"
    # A caller who may not add members learns nothing about the email.
    assert http.post(team.url("/members"), json={"email": "nobody@example.com", "role": "auditor"},
                     headers=bearer(team.member_token)).status_code == 403


BAD_REQUESTS: list[tuple[str, str, Any, int]] = [
    ("post", "/members", {"email": "not-an-email", "role": "developer"}, 400),
    ("post", "/members", {"email": "a@example.com", "role": "king"}, 400),
    ("post", "/members", {"email": "a@example.com", "role": "OWNER"}, 400),
    ("post", "/members", {"email": "a@example.com", "role": None}, 400),
    ("post", "/members", {"email": "a@example.com"}, 400),
    ("post", "/members", {"email": "a@example.com", "role": "developer", "extra": 1}, 400),
    ("post", "/members", {"email": ["a@example.com"], "role": "developer"}, 400),
    ("post", "/members", b'{"email": "a@example.com", "role": ', 400),
    ("post", "/members", b"", 400),
    ("patch", "/members/{member}", {"role": "king"}, 400),
    ("patch", "/members/{member}", {"role": "admin", "email": "a@example.com"}, 400),
    ("patch", "/members/{member}", b"not json", 400),
    ("patch", "/members/not-a-uuid", {"role": "admin"}, None),
    ("delete", "/members/not-a-uuid", None, None),
    ("patch", f"/members/{uuid.uuid4()}", {"role": "admin"}, 404),
    ("delete", f"/members/{uuid.uuid4()}", None, 404),
    ("get", "/members?limit=0", None, 400),
    ("get", "/members?limit=201", None, 400),
    ("get", "/members?limit=ten", None, 400),
    ("get", "/members?cursor=%25%25%25", None, 400),
    ("get", "/members?cursor=bm90LWEtY3Vyc29y", None, 400),
    ("get", "/members?cursor=MjAyNi0wMS0wMVQwMDowMDowMCswMDowMHxub3QtYS11dWlk", None, 400),
]


@pytest.fixture(scope="module")
def bad_team(live_server: str) -> Any:
    with httpx.Client(base_url=live_server, timeout=30) as client:
        yield make_team(client, "developer")


@pytest.mark.parametrize(("method", "path", "body", "status"), BAD_REQUESTS)
def test_bad_member_requests_are_4xx_problems(http: httpx.Client, bad_team: Any, method: str, path: str, body: Any,
                                              status: int | None) -> None:
    kwargs: dict[str, Any] = {"headers": bearer(bad_team.owner_token)}
    if isinstance(body, bytes):
        kwargs["content"] = body
        kwargs["headers"]["Content-Type"] = "application/json"
    elif body is not None:
        kwargs["json"] = body
    response = http.request(method.upper(), bad_team.url(path.format(member=bad_team.member_id)), **kwargs)
    assert (400 <= response.status_code < 500) if status is None else response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert bad_team.members() == {bad_team.owner["user"]["id"]: "owner", bad_team.member_id: "developer"}



def test_a_caller_naming_unknown_emails_is_limited_and_another_caller_is_not(http: httpx.Client) -> None:
    """Anyone can sign up and own a project, so adding members would let any account test which e-mails are
    registered: past 20 unknown e-mails (``KEYLEDGER_MAX_UNKNOWN_MEMBER_EMAILS``) in the window, the caller's
    additions are a 429 problem with ``Retry-After``, whatever e-mail they name; another caller's are not."""
    team, other = make_team(http, "developer"), make_team(http, "developer")

    def add(owner: str, url: str, email: str) -> httpx.Response:
        return http.post(url, json={"email": email, "role": "developer"}, headers=bearer(owner))

    members = team.url("/members")
    for _ in range(20):
        assert add(team.owner_token, members, f"nobody-{uuid.uuid4().hex[:12]}@example.test").status_code == 404
    refused = add(team.owner_token, members, f"nobody-{uuid.uuid4().hex[:12]}@example.test")
    assert refused.status_code == 429, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert int(refused.headers["retry-after"]) > 0 and "no user registered" in refused.json()["detail"]
    registered = team.new_user()["user"]["email"]
    assert add(team.owner_token, members, registered).status_code == 429  # locked, whatever the e-mail
    assert add(other.owner_token, other.url("/members"), "nobody@example.test").status_code == 404
    assert add(other.owner_token, other.url("/members"), registered).status_code == 201

"""Every role against every project endpoint and every kind of membership change, generated from the permission
table in ``domain/scopes.py``: what the table allows answers 2xx, what it does not answers 403."""

from collections.abc import Callable, Iterator

import httpx
import pytest

from domain.scopes import ALL_SCOPES, ROLE_PERMISSIONS, Role, needed_to_change_member, user_permissions
from tests.conftest import client_login
from tests.e2e.support import HOOK_URL, Team, bearer, login, make_team

pytestmark = pytest.mark.e2e

Call = Callable[[Team, str], httpx.Response]

# Each project endpoint, the permission it needs, and how to call it as ``token`` (fresh targets per call).
ENDPOINTS: dict[str, tuple[str, Call]] = {
    "read project": ("project:read", lambda t, tok: t.http.get(t.url(), headers=bearer(tok))),
    "list members": ("members:read", lambda t, tok: t.http.get(t.url("/members"), headers=bearer(tok))),
    "add member": ("members:write", lambda t, tok: t.http.post(
        t.url("/members"), json={"email": t.new_user()["user"]["email"], "role": "developer"}, headers=bearer(tok))),
    "change member": ("members:write", lambda t, tok: t.http.patch(
        t.url(f"/members/{t.added()}"), json={"role": "auditor"}, headers=bearer(tok))),
    "remove member": ("members:write", lambda t, tok: t.http.delete(t.url(f"/members/{t.added()}"),
                                                                    headers=bearer(tok))),
    "list clients": ("clients:read", lambda t, tok: t.http.get(t.url("/clients"), headers=bearer(tok))),
    "create client": ("clients:write", lambda t, tok: t.http.post(t.url("/clients"), json={"name": "x"},
                                                                  headers=bearer(tok))),
    "rotate secret": ("clients:write", lambda t, tok: t.http.post(
        t.url(f"/clients/{t.new_client()['client_id']}/rotate-secret"), json={}, headers=bearer(tok))),
    "delete client": ("clients:write", lambda t, tok: t.http.delete(t.url(f"/clients/{t.new_client()['client_id']}"),
                                                                    headers=bearer(tok))),
    "read client": ("clients:read", lambda t, tok: t.http.get(t.url(f"/clients/{t.new_client()['client_id']}"),
                                                              headers=bearer(tok))),
    "list webhooks": ("project:read", lambda t, tok: t.http.get(t.url("/webhooks"), headers=bearer(tok))),
    "create webhook": ("project:write", lambda t, tok: t.http.post(
        t.url("/webhooks"), json={"url": HOOK_URL, "event_types": ["client.revoked"]}, headers=bearer(tok))),
    "delete webhook": ("project:write", lambda t, tok: t.http.delete(t.url(f"/webhooks/{t.new_webhook()}"),
                                                                     headers=bearer(tok))),
    "list deliveries": ("project:read", lambda t, tok: t.http.get(t.url(f"/webhooks/{t.new_webhook()}/deliveries"),
                                                                  headers=bearer(tok))),
    "list tokens": ("tokens:read", lambda t, tok: t.http.get(t.url("/tokens"), headers=bearer(tok))),
    "revoke tokens": ("tokens:revoke", lambda t, tok: t.http.post(
        t.url("/tokens/revoke"), json={"client_id": t.owner["client"]["client_id"]}, headers=bearer(tok))),
    "read audit": ("audit:read", lambda t, tok: t.http.get(t.url("/audit"), headers=bearer(tok))),
    "export audit": ("audit:read", lambda t, tok: t.http.get(t.url("/audit"), headers={
        **bearer(tok), "Accept": "application/x-ndjson"})),
}

# Membership changes as (role before, role after), None meaning "not a member": each rule of the table is touched
# (owners on either side need owners:manage). The unit tests run every pair.
CHANGES: list[tuple[Role | None, Role | None]] = [
    (None, Role.DEVELOPER), (None, Role.OWNER), (Role.DEVELOPER, Role.AUDITOR), (Role.ADMIN, Role.DEVELOPER),
    (Role.DEVELOPER, Role.OWNER), (Role.OWNER, Role.ADMIN), (Role.DEVELOPER, None), (Role.OWNER, None),
]


def change(team: Team, token: str, before: Role | None, after: Role | None) -> httpx.Response:
    """Moves a fresh person from ``before`` to ``after`` in the team's project, as ``token``."""
    if before is None:
        assert after is not None
        email = team.new_user()["user"]["email"]
        return team.http.post(team.url("/members"), json={"email": email, "role": after}, headers=bearer(token))
    target = team.added(before)
    if after is None:
        return team.http.delete(team.url(f"/members/{target}"), headers=bearer(token))
    return team.http.patch(team.url(f"/members/{target}"), json={"role": after}, headers=bearer(token))


def expect(response: httpx.Response, allowed: bool) -> None:
    if allowed:
        assert response.status_code in (200, 201, 204), response.text
    else:
        assert response.status_code == 403, response.text
        assert response.headers["content-type"].startswith("application/problem+json")


@pytest.fixture(scope="module")
def teams(live_server: str) -> Iterator[dict[Role, Team]]:
    with httpx.Client(base_url=live_server, timeout=30) as client:
        yield {role: make_team(client, role.value) for role in Role}


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
@pytest.mark.parametrize("role", list(Role))
def test_each_role_against_each_endpoint(teams: dict[Role, Team], role: Role, endpoint: str) -> None:
    permission, call = ENDPOINTS[endpoint]
    expect(call(teams[role], teams[role].member_token), permission in ROLE_PERMISSIONS[role])


@pytest.mark.parametrize(("before", "after"), CHANGES, ids=str)
@pytest.mark.parametrize("role", list(Role))
def test_each_role_against_each_membership_change(teams: dict[Role, Team], role: Role, before: Role | None,
                                                  after: Role | None) -> None:
    team = teams[role]
    allowed = needed_to_change_member(before, after) <= user_permissions(role, tuple(ALL_SCOPES))
    expect(change(team, team.member_token, before, after), allowed)


@pytest.mark.parametrize(("before", "after"), CHANGES, ids=str)
def test_a_client_with_the_members_scopes_manages_members_but_never_owners(
        teams: dict[Role, Team], before: Role | None, after: Role | None) -> None:
    team = teams[Role.OWNER]
    token = team.client_token("project:read members:read members:write")
    expect(change(team, token, before, after), Role.OWNER not in (before, after))


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_each_endpoint_is_404_for_a_non_member_and_for_another_projects_client(
        teams: dict[Role, Team], endpoint: str) -> None:
    team, elsewhere = teams[Role.OWNER], teams[Role.ADMIN]
    _, call = ENDPOINTS[endpoint]
    stranger = login(team.http, elsewhere.member)  # a member of their own project and of another team's only
    assert call(team, stranger).status_code == 404
    foreign_key = client_login(team.http, elsewhere.owner).json()["access_token"]
    assert call(team, foreign_key).status_code == 404

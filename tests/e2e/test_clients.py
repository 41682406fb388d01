"""A project's clients (API keys) over HTTP: create, list, read, rotate with grace; two tenants."""

import base64
import json
import time
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.conftest import bearer, client_login, password_login, signup
from tests.e2e.support import make_team

pytestmark = pytest.mark.e2e


def owner_token(http: httpx.Client, account: dict[str, Any]) -> str:
    return str(password_login(http, account).json()["access_token"])


def claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def cc_token(http: httpx.Client, client_id: str, secret: str) -> httpx.Response:
    return http.post("/oauth2/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret))


def create(http: httpx.Client, project_id: str, token: str, **body: Any) -> httpx.Response:
    return http.post(f"/v1/projects/{project_id}/clients", json={"name": "ci", **body}, headers=bearer(token))


def test_a_client_is_created_with_its_secret_once_and_listed_with_a_hint(http: httpx.Client) -> None:
    acme = signup(http, "Acme")
    project, owner = acme["project"]["id"], owner_token(http, acme)
    made = create(http, project, owner, scope="project:read tokens:read", access_token_ttl=120, secret_ttl=86400)
    assert made.status_code == 201, made.text
    assert made.headers["cache-control"] == "no-store"
    body = made.json()
    secret = body["client_secret"]
    assert secret.startswith("klcs_")
    assert body["secret_hint"] == f"klcs_...{secret[-4:]}"
    assert body["scope"] == "project:read tokens:read"
    assert body["access_token_ttl"] == 120
    expires = datetime.fromisoformat(body["secret_expires_at"]) - datetime.fromisoformat(body["created_at"])
    assert 86399 <= expires.total_seconds() <= 86401
    read = http.get(f"/v1/projects/{project}/clients/{body['client_id']}", headers=bearer(owner))
    assert read.status_code == 200
    assert "client_secret" not in read.json()
    assert secret not in read.text
    issued = cc_token(http, body["client_id"], secret).json()["access_token"]
    assert claims(issued)["exp"] - claims(issued)["iat"] == 120
    listed = http.get(f"/v1/projects/{project}/clients", headers=bearer(owner)).json()["items"]
    entry = next(c for c in listed if c["client_id"] == body["client_id"])
    assert secret not in json.dumps(listed)
    assert entry["secret_hint"] == body["secret_hint"]
    assert entry["status"] == "active"
    assert entry["last_used_at"] is not None
    assert datetime.fromisoformat(entry["last_used_at"]).timestamp() == pytest.approx(claims(issued)["iat"], abs=1)
    default = next(c for c in listed if c["client_id"] == acme["client"]["client_id"])
    assert "last_used_at" not in default  # never used


def test_listing_pages_newest_first(http: httpx.Client) -> None:
    acme = signup(http, "Acme")
    project, owner = acme["project"]["id"], owner_token(http, acme)
    made = [create(http, project, owner, name=f"k{i}").json()["client_id"] for i in range(4)]
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        page = http.get(f"/v1/projects/{project}/clients", params=params, headers=bearer(owner)).json()
        seen.extend(c["client_id"] for c in page["items"])
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert seen == [*reversed(made), acme["client"]["client_id"]]


@pytest.mark.parametrize("body", [{"scope": "project:read nonsense"}, {"scope": ""}, {"access_token_ttl": 4},
                                  {"access_token_ttl": 86401}, {"secret_ttl": 0}, {"secret_ttl": 10**8},
                                  {"name": ""}, {"colour": "red"}, {"access_token_ttl": "sixty"}])
def test_bad_client_bodies_are_400(http: httpx.Client, body: dict[str, Any]) -> None:
    acme = signup(http, "Acme")
    response = create(http, acme["project"]["id"], owner_token(http, acme), **body)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


def test_a_client_cannot_mint_a_client_with_more_scope_than_it_holds(http: httpx.Client) -> None:
    acme = signup(http, "Acme")
    project, owner = acme["project"]["id"], owner_token(http, acme)
    # The default client may read clients but not create them.
    key = client_login(http, acme).json()["access_token"]
    assert create(http, project, key).status_code == 403
    maker = create(http, project, owner, scope="clients:read clients:write project:read").json()
    maker_token = cc_token(http, maker["client_id"], maker["client_secret"]).json()["access_token"]
    escalated = create(http, project, maker_token, scope="members:write project:read")
    assert escalated.status_code == 403, escalated.text
    assert create(http, project, maker_token, scope="project:read").status_code == 201
    # And a token request never gets more scope than the client has.
    wider = http.post("/oauth2/token", data={"grant_type": "client_credentials", "scope": "members:write"},
                      auth=(maker["client_id"], maker["client_secret"]))
    assert wider.status_code == 400
    assert wider.json()["error"] == "invalid_scope"


def test_rotation_keeps_the_old_secret_for_the_grace_period_only(http: httpx.Client) -> None:
    acme = signup(http, "Acme")
    project, owner = acme["project"]["id"], owner_token(http, acme)
    client_id, old = acme["client"]["client_id"], acme["client"]["client_secret"]
    rotated = http.post(f"/v1/projects/{project}/clients/{client_id}/rotate-secret", json={"grace_period": 6},
                        headers=bearer(owner))
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["client_secret"]
    grace_ends = datetime.fromisoformat(rotated.json()["previous_secret_expires_at"]).timestamp()
    assert new != old
    assert cc_token(http, client_id, new).status_code == 200
    assert time.time() < grace_ends - 1, "too slow to see the grace period: the old secret's check would race it"
    assert cc_token(http, client_id, old).status_code == 200  # inside its grace period
    while time.time() < grace_ends + 0.2:
        time.sleep(0.2)
    after = cc_token(http, client_id, old)
    assert after.status_code == 401
    assert after.json()["error"] == "invalid_client"
    assert cc_token(http, client_id, new).status_code == 200
    listed = http.get(f"/v1/projects/{project}/clients", headers=bearer(owner)).json()["items"]
    assert listed[0]["secret_hint"] == f"klcs_...{new[-4:]}"
    assert listed[0]["secret_rotated_at"] is not None


def test_rotation_without_grace_stops_the_old_secret_at_once(http: httpx.Client) -> None:
    acme = signup(http, "Acme")
    project, owner = acme["project"]["id"], owner_token(http, acme)
    client_id, old = acme["client"]["client_id"], acme["client"]["client_secret"]
    rotated = http.post(f"/v1/projects/{project}/clients/{client_id}/rotate-secret", json={},
                        headers=bearer(owner))
    assert rotated.status_code == 200, rotated.text
    assert cc_token(http, client_id, old).status_code == 401
    assert cc_token(http, client_id, rotated.json()["client_secret"]).status_code == 200
    too_long = http.post(f"/v1/projects/{project}/clients/{client_id}/rotate-secret",
                         json={"grace_period": 31 * 24 * 3600}, headers=bearer(owner))
    assert too_long.status_code == 400


def test_a_deleted_client_is_listed_as_revoked_and_cannot_rotate(http: httpx.Client) -> None:
    acme = signup(http, "Acme")
    project, owner = acme["project"]["id"], owner_token(http, acme)
    client_id = acme["client"]["client_id"]
    assert http.delete(f"/v1/projects/{project}/clients/{client_id}", headers=bearer(owner)).status_code == 200
    listed = http.get(f"/v1/projects/{project}/clients", headers=bearer(owner)).json()["items"]
    assert listed[0]["status"] == "revoked"
    assert listed[0]["revoked_at"] is not None
    assert http.post(f"/v1/projects/{project}/clients/{client_id}/rotate-secret", json={},
                     headers=bearer(owner)).status_code == 404
    assert http.get(f"/v1/projects/{project}/clients/{client_id}", headers=bearer(owner)).status_code == 404


def test_client_routes_are_isolated_between_two_tenants(http: httpx.Client) -> None:
    alice, bob = signup(http, "A"), signup(http, "B")
    a, b = alice["project"]["id"], bob["project"]["id"]
    alice_owner, alice_key = owner_token(http, alice), client_login(http, alice).json()["access_token"]
    bob_client, bob_owner = bob["client"]["client_id"], owner_token(http, bob)

    def bobs() -> list[dict[str, Any]]:  # all but last_used_at, which B's own token request below moves
        items = http.get(f"/v1/projects/{b}/clients", headers=bearer(bob_owner)).json()["items"]
        return [{k: v for k, v in c.items() if k != "last_used_at"} for c in items]

    bobs_before = bobs()
    for token in (alice_owner, alice_key):
        assert http.get(f"/v1/projects/{b}/clients", headers=bearer(token)).status_code == 404
        assert create(http, b, token).status_code == 404
        assert http.get(f"/v1/projects/{b}/clients/{bob_client}", headers=bearer(token)).status_code == 404
        assert http.post(f"/v1/projects/{b}/clients/{bob_client}/rotate-secret", json={},
                         headers=bearer(token)).status_code == 404
    # B's client named through A's own project is not found either, and nothing of B's shows in A's listing.
    assert http.get(f"/v1/projects/{a}/clients/{bob_client}", headers=bearer(alice_owner)).status_code == 404
    assert http.post(f"/v1/projects/{a}/clients/{bob_client}/rotate-secret", json={},
                     headers=bearer(alice_owner)).status_code == 404
    listed = http.get(f"/v1/projects/{a}/clients", headers=bearer(alice_owner)).json()["items"]
    assert {c["project_id"] for c in listed} == {a}
    assert cc_token(http, bob_client, bob["client"]["client_secret"]).status_code == 200
    # Nothing was written to B by the refused calls: the same clients, the same secret (not rotated).
    assert bobs() == bobs_before


def test_a_developer_cannot_rotate_the_secret_of_a_key_with_more_scope_than_theirs(http: httpx.Client) -> None:
    # A developer holds clients:write but not members:write: a new secret for the owner's broader key would be that
    # key's scope in the developer's hands (members:write lets a client promote its maker to admin).
    team = make_team(http, "developer")
    broad = team.new_client("project:read members:read members:write")
    url = team.url(f"/clients/{broad['client_id']}/rotate-secret")
    refused = http.post(url, json={"grace_period": 3600}, headers=bearer(team.member_token))
    assert refused.status_code == 403, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert "client_secret" not in refused.text and "members:write" in refused.json()["detail"]
    assert cc_token(http, broad["client_id"], broad["client_secret"]).status_code == 200  # unchanged
    own = http.post(team.url("/clients"), json={"name": "mine", "scope": "project:read tokens:read"},
                    headers=bearer(team.member_token))
    assert own.status_code == 201, own.text
    rotated = http.post(team.url(f"/clients/{own.json()['client_id']}/rotate-secret"),  # no body: no grace
                        headers=bearer(team.member_token))
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["client_secret"] != own.json()["client_secret"]
    assert cc_token(http, own.json()["client_id"], own.json()["client_secret"]).status_code == 401
    assert http.post(url, json={}, headers=bearer(team.owner_token)).status_code == 200  # the owner holds it all


def test_a_developer_cannot_delete_a_key_with_more_scope_than_theirs(http: httpx.Client) -> None:
    # Deleting the owner's production key would end every integration built on it: a developer manages only keys
    # within their own scope, as for creating and rotating one.
    team = make_team(http, "developer")
    broad = team.new_client("project:read members:read members:write")
    token = cc_token(http, broad["client_id"], broad["client_secret"]).json()["access_token"]
    refused = http.delete(team.url(f"/clients/{broad['client_id']}"), headers=bearer(team.member_token))
    assert refused.status_code == 403, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert "members:write" in refused.json()["detail"]
    assert cc_token(http, broad["client_id"], broad["client_secret"]).status_code == 200  # still works
    assert http.get(team.url(), headers=bearer(token)).status_code == 200  # and so do its tokens
    own = http.post(team.url("/clients"), json={"name": "mine", "scope": "project:read tokens:read"},
                    headers=bearer(team.member_token))
    assert own.status_code == 201, own.text
    deleted = http.delete(team.url(f"/clients/{own.json()['client_id']}"), headers=bearer(team.member_token))
    assert deleted.status_code == 200 and deleted.json() == {"revoked": 0}
    assert http.delete(team.url(f"/clients/{broad['client_id']}"), headers=bearer(team.owner_token)).json() == {
        "revoked": 2}  # the token above and the one the second check got

"""The management API's token routes over HTTP: listing, bulk revocation, deleting a client, with two tenants."""

import base64
import json
import threading
import time
from typing import Any

import httpx
import pytest

from tests.conftest import bearer, client_login, password_login, signup

pytestmark = pytest.mark.e2e


def owner_token(http: httpx.Client, account: dict[str, Any]) -> str:
    return str(password_login(http, account).json()["access_token"])


def client_tokens(http: httpx.Client, account: dict[str, Any], n: int) -> list[str]:
    return [client_login(http, account).json()["access_token"] for _ in range(n)]


def jti(token: str) -> str:
    """The token id of one of our JWTs (read without verification: the server verifies)."""
    payload = token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["jti"])


def works(http: httpx.Client, account: dict[str, Any], token: str) -> bool:
    response = http.get(f"/v1/projects/{account['project']['id']}", headers=bearer(token))
    assert response.status_code in (200, 401), response.text
    return response.status_code == 200


def test_listing_pages_through_the_projects_tokens_without_their_values(http: httpx.Client) -> None:
    acme = signup(http, "Acme")
    owner = owner_token(http, acme)
    issued = client_tokens(http, acme, 5)
    url = f"/v1/projects/{acme['project']['id']}/tokens"
    seen: list[dict[str, Any]] = []
    page = http.get(url, params={"limit": 2}, headers=bearer(owner))
    while True:
        assert page.status_code == 200, page.text
        for value in issued:
            assert value not in page.text
        body = page.json()
        assert len(body["items"]) <= 2
        seen.extend(body["items"])
        if body["next_cursor"] is None:
            break
        page = http.get(url, params={"limit": 2, "cursor": body["next_cursor"]}, headers=bearer(owner))
    assert len(seen) == 5
    assert len({t["token_id"] for t in seen}) == 5
    assert [t["issued_at"] for t in seen] == sorted((t["issued_at"] for t in seen), reverse=True)
    first = seen[0]
    assert first["status"] == "active"
    assert first["kind"] == "access"
    assert first["client_id"] == acme["client"]["client_id"]
    assert first["project_id"] == acme["project"]["id"]
    assert first["grant_type"] == "client_credentials"


def test_listing_filters_by_status_and_client(http: httpx.Client) -> None:
    acme = signup(http, "Acme")
    owner = owner_token(http, acme)
    tokens = client_tokens(http, acme, 3)
    url = f"/v1/projects/{acme['project']['id']}/tokens"
    revoked = http.post("/oauth2/revoke", data={"token": tokens[0]},
                        auth=(acme["client"]["client_id"], acme["client"]["client_secret"]))
    assert revoked.status_code == 200
    by_status = {s: http.get(url, params={"status": s}, headers=bearer(owner)).json()["items"]
                 for s in ("active", "revoked", "expired")}
    assert len(by_status["active"]) == 2
    assert len(by_status["revoked"]) == 1
    assert by_status["revoked"][0]["ended_reason"] == "revoked by client"
    assert by_status["expired"] == []
    mine = http.get(url, params={"client_id": acme["client"]["client_id"]}, headers=bearer(owner)).json()["items"]
    assert len(mine) == 3
    assert http.get(url, params={"client_id": "nobody"}, headers=bearer(owner)).json()["items"] == []


@pytest.mark.parametrize("params", [{"status": "alive"}, {"limit": "0"}, {"limit": "201"}, {"cursor": "%%%"},
                                    {"cursor": "bm90LWEtY3Vyc29y"}, {"user_id": "not-a-uuid"}])
def test_bad_listing_parameters_are_400_problems(http: httpx.Client, params: dict[str, str]) -> None:
    acme = signup(http, "Acme")
    response = http.get(f"/v1/projects/{acme['project']['id']}/tokens", params=params,
                        headers=bearer(owner_token(http, acme)))
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


def test_a_cursor_sent_with_another_project_or_other_filters_is_a_400_problem(http: httpx.Client) -> None:
    """A cursor names a position in one listing: with another project or other filters it would start that listing
    in the middle, silently skipping tokens; it is refused, and the listing it came from still pages on."""
    acme, other = signup(http, "Acme"), signup(http, "Other")
    client_tokens(http, acme, 3)
    client_tokens(http, other, 3)
    owner = owner_token(http, acme)
    url = f"/v1/projects/{acme['project']['id']}/tokens"
    cursor = http.get(url, params={"limit": 1}, headers=bearer(owner)).json()["next_cursor"]
    assert cursor
    other_url = f"/v1/projects/{other['project']['id']}/tokens"
    for target, params, token in [(other_url, {}, owner_token(http, other)), (url, {"status": "active"}, owner),
                                  (url, {"client_id": acme["client"]["client_id"]}, owner)]:
        refused = http.get(target, params={"limit": 1, "cursor": cursor, **params}, headers=bearer(token))
        assert refused.status_code == 400, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert "another listing" in refused.json()["detail"]
    assert http.get(url, params={"limit": 1, "cursor": cursor}, headers=bearer(owner)).status_code == 200


def test_bulk_revocation_by_token_and_by_client_takes_effect_at_once(http: httpx.Client) -> None:
    acme = signup(http, "Acme")
    owner = owner_token(http, acme)
    url = f"/v1/projects/{acme['project']['id']}/tokens/revoke"
    one, *rest = client_tokens(http, acme, 4)
    one_id = jti(one)
    answer = http.post(url, json={"token_id": one_id}, headers=bearer(owner))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"revoked": 1}
    assert answer.headers["cache-control"] == "no-store"
    assert not works(http, acme, one)
    assert all(works(http, acme, t) for t in rest)
    assert http.post(url, json={"token_id": one_id}, headers=bearer(owner)).json() == {"revoked": 0}
    by_client = http.post(url, json={"client_id": acme["client"]["client_id"]}, headers=bearer(owner))
    assert by_client.json() == {"revoked": 3}
    assert not any(works(http, acme, t) for t in rest)
    # The client itself still works: it gets a new token.
    assert works(http, acme, client_tokens(http, acme, 1)[0])


@pytest.mark.parametrize("body", [{}, {"token_id": "0e6a4f51-7a53-4c73-9a39-2d3b9f7f1a11", "client_id": "x"},
                                  {"token_id": "nope"}, {"client_id": ""}, {"everything": True}])
def test_bulk_revocation_needs_exactly_one_valid_filter(http: httpx.Client, body: dict[str, Any]) -> None:
    acme = signup(http, "Acme")
    token = client_tokens(http, acme, 1)[0]
    response = http.post(f"/v1/projects/{acme['project']['id']}/tokens/revoke", json=body,
                         headers=bearer(owner_token(http, acme)))
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert works(http, acme, token)


def test_deleting_a_client_revokes_it_and_all_its_tokens(http: httpx.Client) -> None:
    acme = signup(http, "Acme")
    owner = owner_token(http, acme)
    tokens = client_tokens(http, acme, 3)
    url = f"/v1/projects/{acme['project']['id']}/clients/{acme['client']['client_id']}"
    deleted = http.delete(url, headers=bearer(owner))
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"revoked": 3}
    assert not any(works(http, acme, t) for t in tokens)
    refused = client_login(http, acme)
    assert refused.status_code == 401
    assert refused.json()["error"] == "invalid_client"
    assert http.delete(url, headers=bearer(owner)).status_code == 404
    listed = http.get(f"/v1/projects/{acme['project']['id']}/tokens", headers=bearer(owner)).json()["items"]
    assert {(t["status"], t["ended_reason"]) for t in listed} == {("revoked", "client deleted")}


def test_tokens_issued_while_a_client_is_deleted_are_all_revoked_when_it_answers(live_server: str,
                                                                                http: httpx.Client) -> None:
    """Four callers keep exchanging the client's secret while its owner deletes it: every token answered before
    the deletion answered is refused once it has (a hundred or more stayed live per deletion before the command
    revoked late tokens and issuance was guarded by the client's version)."""
    acme = signup(http, "Acme")
    owner = owner_token(http, acme)
    credentials = (acme["client"]["client_id"], acme["client"]["client_secret"])
    answered: list[tuple[int, str | None]] = []
    lock, stop = threading.Lock(), threading.Event()

    def exchange() -> None:
        with httpx.Client(base_url=live_server, timeout=30) as own:
            while not stop.is_set():
                response = own.post("/oauth2/token", data={"grant_type": "client_credentials"}, auth=credentials)
                token = response.json().get("access_token") if response.status_code == 200 else None
                with lock:
                    answered.append((response.status_code, token))
                if response.status_code != 200:
                    return

    callers = [threading.Thread(target=exchange) for _ in range(4)]
    for caller in callers:
        caller.start()
    deadline = time.monotonic() + 30
    while len(answered) < 20 and time.monotonic() < deadline and any(c.is_alive() for c in callers):
        time.sleep(0.01)
    deleted = http.delete(f"/v1/projects/{acme['project']['id']}/clients/{credentials[0]}", headers=bearer(owner))
    stop.set()
    for caller in callers:
        caller.join(timeout=30)
    assert deleted.status_code == 200, deleted.text
    issued = [token for status, token in answered if status == 200 and token]
    assert len(issued) >= 20
    assert deleted.json()["revoked"] == len(issued)
    assert not any(works(http, acme, token) for token in issued)


def test_a_client_token_needs_the_permission_to_revoke(http: httpx.Client) -> None:
    acme = signup(http, "Acme")
    key = client_tokens(http, acme, 1)[0]
    project = acme["project"]["id"]
    # The first client's default scope reads tokens but does not revoke them.
    assert http.get(f"/v1/projects/{project}/tokens", headers=bearer(key)).status_code == 200
    refused = http.post(f"/v1/projects/{project}/tokens/revoke", json={"client_id": acme["client"]["client_id"]},
                        headers=bearer(key))
    assert refused.status_code == 403
    # RFC 6750 section 3.1: the token lacks the privileges the request needs.
    assert refused.headers["www-authenticate"].startswith('Bearer realm="keyledger", error="insufficient_scope"')
    assert http.delete(f"/v1/projects/{project}/clients/{acme['client']['client_id']}",
                       headers=bearer(key)).status_code == 403
    assert works(http, acme, key)


def test_token_routes_are_isolated_between_two_tenants(http: httpx.Client) -> None:
    alice, bob = signup(http, "A"), signup(http, "B")
    alice_owner, alice_key = owner_token(http, alice), client_tokens(http, alice, 1)[0]
    bob_token = client_tokens(http, bob, 1)[0]
    bob_owner = owner_token(http, bob)
    bob_listing = http.get(f"/v1/projects/{bob['project']['id']}/tokens", headers=bearer(bob_owner)).json()
    bob_token_id = bob_listing["items"][0]["token_id"]
    a, b = alice["project"]["id"], bob["project"]["id"]
    for token in (alice_owner, alice_key):
        assert http.get(f"/v1/projects/{b}/tokens", headers=bearer(token)).status_code == 404
        assert http.post(f"/v1/projects/{b}/tokens/revoke", json={"token_id": bob_token_id},
                         headers=bearer(token)).status_code == 404
        assert http.delete(f"/v1/projects/{b}/clients/{bob['client']['client_id']}",
                           headers=bearer(token)).status_code == 404
    # Naming B's token, client or listing filter through A's own project reaches nothing of B's.
    assert http.post(f"/v1/projects/{a}/tokens/revoke", json={"token_id": bob_token_id},
                     headers=bearer(alice_owner)).json() == {"revoked": 0}
    assert http.post(f"/v1/projects/{a}/tokens/revoke", json={"client_id": bob["client"]["client_id"]},
                     headers=bearer(alice_owner)).json() == {"revoked": 0}
    assert http.delete(f"/v1/projects/{a}/clients/{bob['client']['client_id']}",
                       headers=bearer(alice_owner)).status_code == 404
    foreign = http.get(f"/v1/projects/{a}/tokens", params={"client_id": bob["client"]["client_id"]},
                       headers=bearer(alice_owner))
    assert foreign.json()["items"] == []
    assert works(http, bob, bob_token)
    assert client_login(http, bob).status_code == 200

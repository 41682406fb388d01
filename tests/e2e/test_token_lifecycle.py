"""Token lifecycle over HTTP: refresh rotation and reuse detection, RFC 7009 revocation, RFC 7662 introspection.

Invariant 1 (a revoked token is refused the instant the revocation is answered), invariant 2 (no client of one
project introspects or revokes another's tokens) and invariant 3 (the reuse is recorded in the store).
"""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import UUID

import httpx
import jwt
import psycopg
import pytest
from psycopg import sql

from domain.token import Token
from infrastructure.bootstrap import Endpoints, build
from infrastructure.crypto.opaque import CredentialType, mint
from infrastructure.settings import Settings
from tests.conftest import (
    SECRET_KEY,
    bearer,
    client_login,
    introspect_token,
    password_login,
    refresh_login,
    revoke_token,
    signup,
)
from tests.e2e.support import short_lived_token

pytestmark = pytest.mark.e2e

EVENTS_TABLE = "keyledger_events"  # eventsourcing's table of the "Keyledger" application, in the public schema
INACTIVE = {"active": False}


def no_store(response: httpx.Response) -> httpx.Response:
    """Asserts the answer may not be cached (RFC 6749 section 5.1, RFC 7009, RFC 7662) and returns it."""
    assert response.headers.get("cache-control") == "no-store", response.headers
    return response


def me_status(http: httpx.Client, access_token: str) -> int:
    response = http.get("/v1/me", headers=bearer(access_token))
    if response.status_code == 401:
        assert 'error="invalid_token"' in response.headers["www-authenticate"]
    return response.status_code


def project_status(http: httpx.Client, account: dict[str, Any], access_token: str) -> int:
    return http.get(f"/v1/projects/{account['project']['id']}", headers=bearer(access_token)).status_code


def login(http: httpx.Client, account: dict[str, Any]) -> dict[str, Any]:
    response = no_store(password_login(http, account))
    assert response.status_code == 200, response.text
    return dict(response.json())


def rotate(http: httpx.Client, refresh_token: str) -> dict[str, Any]:
    response = no_store(refresh_login(http, refresh_token))
    assert response.status_code == 200, response.text
    return dict(response.json())


def assert_invalid_grant(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    assert no_store(response).json()["error"] == "invalid_grant"


def stored(database_url: str, topic_suffix: str) -> list[tuple[str, dict[str, Any]]]:
    """(originator_id, decoded state) of every stored event whose topic ends with ``topic_suffix``."""
    with psycopg.connect(database_url) as conn:
        query = sql.SQL("SELECT originator_id, state FROM {} WHERE topic LIKE %s ORDER BY notification_id")
        rows = conn.execute(query.format(sql.Identifier(EVENTS_TABLE)), ("%." + topic_suffix,)).fetchall()
    return [(str(row[0]), json.loads(bytes(row[1]))) for row in rows]


def family_of(database_url: str, access_token: str) -> str:
    """The family id recorded in the TokenIssued event of an access token (its jti is the aggregate id)."""
    jti = jwt.decode(access_token, options={"verify_signature": False})["jti"]
    states = [state for originator, state in stored(database_url, "TokenIssued") if originator == jti]
    assert len(states) == 1
    return str(states[0]["family_id"]["_data_"])


def test_refresh_rotates_the_pair_and_refuses_the_used_refresh_token(http: httpx.Client) -> None:
    """Rotation: a new access/refresh pair that works, the old access token still valid, the old refresh refused."""
    first = login(http, signup(http))
    second = rotate(http, first["refresh_token"])
    assert second["access_token"] != first["access_token"]
    assert second["refresh_token"] != first["refresh_token"]
    assert second["token_type"] == "Bearer" and second["scope"] == first["scope"] and second["expires_in"] > 0
    assert me_status(http, second["access_token"]) == 200
    assert me_status(http, first["access_token"]) == 200, "rotation must not end the old, unexpired access token"
    assert_invalid_grant(refresh_login(http, first["refresh_token"]))


def test_reuse_revokes_the_whole_family_and_is_recorded(http: httpx.Client, server_database_url: str) -> None:
    """Presenting a used refresh token revokes every token of its login and stores RefreshTokenReuseDetected;
    another login of the same person is a family of its own and keeps working."""
    account = signup(http)
    chain = [login(http, account)]
    for _ in range(2):
        chain.append(rotate(http, chain[-1]["refresh_token"]))
    other_login = login(http, account)
    assert all(me_status(http, pair["access_token"]) == 200 for pair in chain)

    assert_invalid_grant(refresh_login(http, chain[0]["refresh_token"]))

    assert [me_status(http, pair["access_token"]) for pair in chain] == [401, 401, 401]
    assert_invalid_grant(refresh_login(http, chain[-1]["refresh_token"]))
    assert me_status(http, other_login["access_token"]) == 200
    family = family_of(server_database_url, chain[0]["access_token"])
    detected = [state for _, state in stored(server_database_url, "RefreshTokenReuseDetected")
                if state["family_id"]["_data_"] == family]
    assert len(detected) == 1
    assert family_of(server_database_url, chain[-1]["access_token"]) == family


def test_a_rotation_of_a_family_marked_ended_is_refused_and_revokes_the_live_end(
        http: httpx.Client, server_database_url: str, redis_url: str) -> None:
    """A reuse detected while the token lookup model lagged may not reach a family's live end (a bounded walk on the
    streams); it marks the family ended on the login's first refresh token, and the token endpoint's rotation of the
    live end, guarded by that token, conflicts, is decided again on the mark, refused, and revokes the live end."""
    account = signup(http)
    first = login(http, account)
    live_end = rotate(http, rotate(http, first["refresh_token"])["refresh_token"])
    container = build(Settings(secret_key=SECRET_KEY), Endpoints(database_url=server_database_url, redis_url=redis_url))
    try:  # what a detection whose walk stopped short leaves: the mark, and the live end still live
        root = container.app.load(UUID(family_of(server_database_url, first["access_token"])), Token)
        root.end_family(actor="system")
        container.app.save(root)
    finally:
        container.close()
    assert me_status(http, live_end["access_token"]) == 200
    assert_invalid_grant(refresh_login(http, live_end["refresh_token"]))
    assert me_status(http, live_end["access_token"]) == 401
    assert_invalid_grant(refresh_login(http, live_end["refresh_token"]))


def test_concurrent_refreshes_of_one_token_let_exactly_one_win(live_server: str, http: httpx.Client) -> None:
    """Eight simultaneous refreshes with one refresh token: exactly one 200, every other one 400 invalid_grant."""
    refresh_token = login(http, signup(http))["refresh_token"]
    threads = 8
    barrier = threading.Barrier(threads)

    def attempt(_: int) -> httpx.Response:
        with httpx.Client(base_url=live_server, timeout=30) as own:
            barrier.wait(timeout=30)
            return refresh_login(own, refresh_token)

    with ThreadPoolExecutor(threads) as pool:
        responses = list(pool.map(attempt, range(threads)))
    assert sorted(r.status_code for r in responses) == [200] + [400] * (threads - 1), [r.text for r in responses]
    assert {no_store(r).json()["error"] for r in responses if r.status_code == 400} == {"invalid_grant"}


def test_revoked_access_tokens_are_refused_at_once(http: httpx.Client) -> None:
    """A revocation answered 200 means the API refuses the token and introspection calls it inactive, at once."""
    account = signup(http)
    user_token = login(http, account)["access_token"]
    assert no_store(revoke_token(http, user_token)).status_code == 200
    assert me_status(http, user_token) == 401

    key_token = client_login(http, account).json()["access_token"]
    assert introspect_token(http, account, key_token).json()["active"] is True
    # The hint is a hint: a wrong one does not stop the revocation.
    assert no_store(revoke_token(http, key_token, account, token_type_hint="refresh_token")).status_code == 200
    assert project_status(http, account, key_token) == 401
    assert introspect_token(http, account, key_token).json() == INACTIVE


@pytest.mark.parametrize("which", ["newest", "used"])
def test_revoking_a_refresh_token_revokes_its_family(http: httpx.Client, which: str) -> None:
    """Revoking a refresh token (the newest or an already used one) ends every access token of its login."""
    first = login(http, signup(http))
    second = rotate(http, first["refresh_token"])
    target = second["refresh_token"] if which == "newest" else first["refresh_token"]
    assert no_store(revoke_token(http, target, token_type_hint="refresh_token")).status_code == 200
    assert [me_status(http, pair["access_token"]) for pair in (first, second)] == [401, 401]
    assert_invalid_grant(refresh_login(http, second["refresh_token"]))


def test_a_known_clients_revocations_answer_as_the_general_path(http: httpx.Client) -> None:
    """Once a client's secret was verified, its revocations of its own tokens are answered in front of the router
    (``infrastructure.http.revocation_lane``): the same answer as the general path's, the token refused at once;
    everything else (another client's token, a wrong secret, a malformed form) still gets the general path's
    error."""
    alice, bob = signup(http, "A"), signup(http, "B")
    first = revoke_token(http, client_login(http, alice).json()["access_token"], alice)  # general path: learns it
    client = alice["client"]
    for method in ("basic", "post"):
        token = client_login(http, alice).json()["access_token"]
        data = {"token": token} if method == "basic" else {"token": token, "client_id": client["client_id"],
                                                           "client_secret": client["client_secret"]}
        auth = (client["client_id"], client["client_secret"]) if method == "basic" else None
        answer = http.post("/oauth2/revoke", data=data, auth=auth)
        assert (answer.status_code, answer.content) == (first.status_code, first.content) == (200, b"")
        assert {k: answer.headers.get(k) for k in ("cache-control", "pragma", "content-type")} == \
            {k: first.headers.get(k) for k in ("cache-control", "pragma", "content-type")}
        # An empty body is no JSON document: typed as text, which may be empty.
        assert answer.headers["content-type"].startswith("text/plain")
        assert project_status(http, alice, token) == 401
        assert introspect_token(http, alice, token).json() == INACTIVE

    bob_key = client_login(http, bob).json()["access_token"]
    assert_invalid_grant(revoke_token(http, bob_key, alice))
    assert project_status(http, bob, bob_key) == 200
    live = client_login(http, alice).json()["access_token"]
    wrong = http.post("/oauth2/revoke", data={"token": live}, auth=(client["client_id"], client["client_secret"][:-2]))
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    assert wrong.headers["www-authenticate"].lower().startswith("basic")
    repeated = http.post("/oauth2/revoke", content=f"token={live}&token={live}".encode(),
                         headers={"content-type": "application/x-www-form-urlencoded"},
                         auth=(client["client_id"], client["client_secret"]))
    assert repeated.status_code == 400 and repeated.json()["error"] == "invalid_request"
    assert project_status(http, alice, live) == 200


def test_unknown_and_already_revoked_tokens_answer_200(http: httpx.Client) -> None:
    """RFC 7009 section 2.2: nothing to revoke is still a success."""
    account = signup(http)
    pair = login(http, account)
    key_token = client_login(http, account).json()["access_token"]
    for token in ("not-a-token", "a.b.c", key_token[:-4] + "AAAA", mint(CredentialType.REFRESH_TOKEN)):
        assert no_store(revoke_token(http, token, account)).status_code == 200
        assert no_store(revoke_token(http, token)).status_code == 200
    for _ in range(2):
        assert revoke_token(http, pair["refresh_token"]).status_code == 200
        assert revoke_token(http, key_token, account).status_code == 200
    assert project_status(http, account, key_token) == 401


def test_missing_token_parameter_is_invalid_request(http: httpx.Client) -> None:
    """Revocation and introspection without ``token`` (or with an empty one, which RFC 6749 section 3.2 treats as
    omitted) answer RFC 6749 section 5.2 invalid_request."""
    account = signup(http)
    client = account["client"]
    basic = (client["client_id"], client["client_secret"])
    for response in (http.post("/oauth2/revoke", data={"client_id": "dashboard"}),
                     revoke_token(http, ""),
                     http.post("/oauth2/revoke", data={}, auth=basic),
                     http.post("/oauth2/introspect", data={}, auth=basic),
                     introspect_token(http, account, "")):
        assert response.status_code == 400, response.text
        assert no_store(response).json()["error"] == "invalid_request"


def test_introspection_describes_a_live_access_token(live_server: str, http: httpx.Client) -> None:
    """RFC 7662 section 2.2 fields of the client's own project's token, matching the JWT's claims, under both
    client authentication methods."""
    account = signup(http)
    token = client_login(http, account).json()["access_token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    client = account["client"]
    basic = no_store(introspect_token(http, account, token)).json()
    post = http.post("/oauth2/introspect", data={"token": token, "client_id": client["client_id"],
                                                 "client_secret": client["client_secret"]}).json()
    assert basic == post == {
        "active": True, "scope": claims["scope"], "client_id": client["client_id"], "sub": client["client_id"],
        "exp": claims["exp"], "iat": claims["iat"], "jti": claims["jti"], "iss": live_server,
        "aud": f"{live_server}/v1", "token_type": "Bearer", "project_id": account["project"]["id"],
    }


def test_a_projects_client_sees_its_members_logins_and_no_one_elses(http: httpx.Client) -> None:
    """A member's dashboard tokens (access and refresh) can act on the project, so its clients may introspect
    them; a non-member's dashboard tokens answer exactly ``{"active": false}``."""
    account, stranger = signup(http), signup(http)
    pair = login(http, account)
    access = no_store(introspect_token(http, account, pair["access_token"])).json()
    assert access["active"] is True
    assert access["sub"] == account["user"]["id"]
    assert access["client_id"] == "dashboard"
    assert access["token_type"] == "Bearer"
    assert "project_id" not in access
    refresh = no_store(introspect_token(http, account, pair["refresh_token"])).json()
    assert refresh["active"] is True
    assert refresh["token_type"] == "refresh_token"
    assert access["aud"] != refresh["aud"] == refresh["iss"]  # redeemed at the token endpoint, not the API's
    audit = http.get(f"/v1/projects/{account['project']['id']}/audit?token_id={refresh['jti']}",
                     headers={"Authorization": f"Bearer {pair['access_token']}"})
    assert audit.status_code == 200, audit.text
    assert [entry["type"] for entry in audit.json()["items"]] == ["TokenIssued"]  # the jti names the refresh token
    theirs = login(http, stranger)
    for token in (theirs["access_token"], theirs["refresh_token"]):
        assert no_store(introspect_token(http, account, token)).json() == INACTIVE
    assert me_status(http, theirs["access_token"]) == 200


def test_inactive_tokens_answer_only_active_false(http: httpx.Client) -> None:
    """Revoked, malformed, tampered or unknown tokens: exactly ``{"active": false}``, nothing more."""
    account = signup(http)
    token = client_login(http, account).json()["access_token"]
    revoked = client_login(http, account).json()["access_token"]
    assert revoke_token(http, revoked, account).status_code == 200
    header, payload, signature = token.split(".")
    for candidate in (revoked, "garbage", "a.b.c", f"{header}.{payload}.{signature[::-1]}", f"{header}.{payload}.",
                      "klrt_" + "x" * 38, mint(CredentialType.REFRESH_TOKEN)):
        response = no_store(introspect_token(http, account, candidate))
        assert response.status_code == 200 and response.json() == INACTIVE, candidate


def test_the_dashboard_cannot_introspect(http: httpx.Client) -> None:
    """Introspection needs a confidential client: the public dashboard client is refused invalid_client."""
    token = login(http, signup(http))["access_token"]
    response = http.post("/oauth2/introspect", data={"token": token, "client_id": "dashboard"})
    assert response.status_code == 401 and no_store(response).json()["error"] == "invalid_client"


def test_no_client_revokes_or_introspects_another_clients_tokens(http: httpx.Client) -> None:
    """Invariant 2: project A's client sees B's token as inactive and cannot revoke it (400 invalid_grant); nor can
    the dashboard revoke a project token, nor a project client a dashboard token. Every such token keeps working."""
    alice, bob = signup(http, "A"), signup(http, "B")
    bob_key = client_login(http, bob).json()["access_token"]
    bob_user = login(http, bob)

    assert introspect_token(http, alice, bob_key).json() == INACTIVE
    assert_invalid_grant(revoke_token(http, bob_key, alice))
    assert_invalid_grant(revoke_token(http, bob_key))
    for token in (bob_user["access_token"], bob_user["refresh_token"]):
        assert_invalid_grant(revoke_token(http, token, alice))
        assert_invalid_grant(revoke_token(http, token, bob))

    assert project_status(http, bob, bob_key) == 200
    assert introspect_token(http, bob, bob_key).json()["active"] is True
    assert me_status(http, bob_user["access_token"]) == 200
    assert rotate(http, bob_user["refresh_token"])["access_token"]


def test_expired_tokens_are_inactive_and_revocable_as_a_no_op(http: httpx.Client) -> None:
    """Once the API refuses an expired token (a client's five-second one: the shortest lifetime there is),
    introspection says exactly ``{"active": false}`` and revoking it is a 200 (RFC 7009: nothing to do)."""
    token, account = short_lived_token(http, signup(http))
    deadline = time.monotonic() + 30
    while project_status(http, account, token) == 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert project_status(http, account, token) == 401, "the five-second token never expired"
    assert introspect_token(http, account, token).json() == INACTIVE
    assert revoke_token(http, token, account).status_code == 200

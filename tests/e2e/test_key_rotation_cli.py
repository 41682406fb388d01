"""``keyledger keys rotate [--now]`` and ``keyledger workers status`` against a live server's database."""

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import psycopg
import pytest
from eventsourcing.utils import get_topic

from domain.ids import keyring_id
from domain.keyring import KeyRing
from tests.conftest import (
    SECRET_KEY,
    bearer,
    client_login,
    fresh_database,
    introspect_token,
    signup,
    start_server,
    stop_server,
    wait_until_up,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def own_server(server_url: str, redis_url: str) -> Iterator[tuple[str, dict[str, str]]]:
    """A server on a database of its own: an emergency rotation must not disturb the shared server's tests."""
    with fresh_database(server_url) as url:
        env = {"KEYLEDGER_DATABASE_URL": url, "KEYLEDGER_REDIS_URL": redis_url, "KEYLEDGER_SECRET_KEY": SECRET_KEY}
        proc, base = start_server(env)
        try:
            wait_until_up(base, proc)
            yield base, env
        finally:
            stop_server(proc)


def keyledger(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "infrastructure.cli", *args], env={**os.environ, **env},
                          capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout.decode()


def kids(http: httpx.Client) -> set[str]:
    return {k["kid"] for k in http.get("/.well-known/jwks.json").json()["keys"]}


def token_of(http: httpx.Client, account: dict[str, Any]) -> str:
    issued = client_login(http, account)
    assert issued.status_code == 200, issued.text
    return str(issued.json()["access_token"])


def test_rotate_prepublishes_then_now_revokes_the_signing_key(own_server: tuple[str, dict[str, str]]) -> None:
    base, env = own_server
    with httpx.Client(base_url=base, timeout=30) as http:
        account, other = signup(http), signup(http, "Other")
        old = token_of(http, account)
        old_kid = jwt.get_unverified_header(old)["kid"]
        project = f"/v1/projects/{account['project']['id']}"
        # Used before the rotation: the API process remembers the verified token, and the second introspection
        # is answered by the known-client path; neither may outlive the key's revocation.
        assert http.get(project, headers=bearer(old)).status_code == 200
        for _ in range(2):
            assert introspect_token(http, account, old).json()["active"] is True

        created = keyledger(env, "keys", "rotate").split()
        assert created[0] == "created"
        assert kids(http) == {old_kid, created[1]}  # published at once, before it signs anything
        assert jwt.get_unverified_header(token_of(http, account))["kid"] == old_kid

        steps = keyledger(env, "keys", "rotate", "--now").splitlines()
        assert [line.split()[0] for line in steps] == ["created", "activated", "revoked"]
        assert steps[2].split()[1] == old_kid
        # Refused on the very next request, on the API and by introspection, and gone from the JWKS.
        refused = http.get(project, headers=bearer(old))
        assert refused.status_code == 401 and "invalid_token" in refused.headers["www-authenticate"]
        assert introspect_token(http, account, old).json() == {"active": False}
        assert old_kid not in kids(http)
        fresh = token_of(http, account)
        assert jwt.get_unverified_header(fresh)["kid"] == steps[0].split()[1]
        assert http.get(project, headers=bearer(fresh)).status_code == 200
        assert introspect_token(http, account, fresh).json()["active"] is True
        assert introspect_token(http, other, fresh).json() == {"active": False}  # still confined to its project
        assert http.get(f"/v1/projects/{other['project']['id']}", headers=bearer(fresh)).status_code == 404


def test_every_token_asked_for_after_an_emergency_rotation_works(own_server: tuple[str, dict[str, str]]) -> None:
    """A client keeps asking for tokens while an operator runs ``keys rotate --now``. The server's signer re-checks
    the ring at most once a second; without the ring guard, the tokens of that second were signed with the revoked
    key and refused from the start. Tokens asked for before the revocation committed may be refused (their key was
    revoked after they were issued); those asked for after it must all work."""
    base, env = own_server
    with httpx.Client(base_url=base, timeout=30) as http:
        account = signup(http)
    project = f"/v1/projects/{account['project']['id']}"
    stop = threading.Event()
    answers: list[tuple[float, int, str]] = []  # (asked at, status, access token or body)
    committed: list[float] = []
    with psycopg.connect(env["KEYLEDGER_DATABASE_URL"], autocommit=True) as conn:
        before = revocations(conn)

    def keep_asking() -> None:  # records, never asserts: a failure here must reach the test's assertions
        with httpx.Client(base_url=base, timeout=30) as client:
            while not stop.is_set():
                asked = time.monotonic()
                answer = client_login(client, account)
                token = answer.json()["access_token"] if answer.status_code == 200 else answer.text
                answers.append((asked, answer.status_code, token))

    def watch_the_ring() -> None:  # when the revocation commits, read from the store (not through the server)
        with psycopg.connect(env["KEYLEDGER_DATABASE_URL"], autocommit=True) as conn:
            while not stop.is_set() and revocations(conn) == before:
                time.sleep(0.01)
            committed.append(time.monotonic())

    threads = [threading.Thread(target=keep_asking), threading.Thread(target=watch_the_ring)]
    for thread in threads:
        thread.start()
    try:
        keyledger(env, "keys", "rotate", "--now")
        deadline = time.monotonic() + 60  # a liveness bound: enough answers come long before it
        while time.monotonic() < deadline and len(after_the(committed, answers)) < 50:
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    after = after_the(committed, answers)
    assert len(after) >= 50, (committed, len(answers))
    assert {status for _, status, _ in after} == {200}, [body for _, status, body in after if status != 200][:3]
    with httpx.Client(base_url=base, timeout=30) as http:
        refused = [token for _, _, token in after if http.get(project, headers=bearer(token)).status_code != 200]
    assert refused == [], f"{len(refused)} of {len(after)} tokens asked for after the rotation are refused"


def after_the(committed: list[float], answers: list[tuple[float, int, str]]) -> list[tuple[float, int, str]]:
    """The answers to requests sent after the revocation committed (none while it has not)."""
    return [answer for answer in list(answers) if committed and answer[0] > committed[0]]


def revocations(conn: psycopg.Connection[Any]) -> int:
    """Signing keys revoked so far, from the key ring's stream."""
    row = conn.execute("SELECT count(*) FROM keyledger_events WHERE originator_id = %s AND topic = %s",
                       (keyring_id(), get_topic(KeyRing.SigningKeyRevoked))).fetchone()
    return int(row[0]) if row else 0


def test_workers_status_shows_queue_depth_and_keys(own_server: tuple[str, dict[str, str]]) -> None:
    _, env = own_server
    out = keyledger(env, "workers", "status")
    for expected in ("queue keyledger", "ready", "in flight", "delayed", "dead-lettered", "last heartbeat",
                     "tokens due", "active kid"):
        assert expected in out, out
    assert "error" not in out, out

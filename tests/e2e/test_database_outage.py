"""PostgreSQL going away under a running server: every endpoint that needs it answers 503 with its standard error
body within seconds (never a 500, never a request held for minutes), and the server serves again once PostgreSQL
is back, without a restart.

The outage is real: the server's database stops accepting connections and its sessions are terminated.
"""

import contextlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from infrastructure.postgres import with_database
from tests.conftest import (
    SECRET_KEY,
    bearer,
    client_login,
    fresh_database,
    password_login,
    signup,
    start_server,
    stop_server,
    wait_until_up,
)

pytestmark = pytest.mark.e2e

# The client's timeout, a liveness bound (the pool waits 5 s; the revocation lane, retried on the general path, 10):
# a request held past it fails the test. The durations themselves are not asserted.
WITHIN = 30.0


@contextlib.contextmanager
def outage(database_url: str) -> Iterator[None]:
    """The database refuses new connections and loses its sessions until the block ends."""
    name = conninfo_to_dict(database_url)["dbname"]
    admin = with_database(database_url, "postgres")
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(name)))
            # Waits (up to 5 s each) until every session of the database has ended.
            conn.execute("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = %s", (name,))
        yield
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(sql.Identifier(name)))


def requests_needing_the_store(base: str, account: dict[str, Any]) -> dict[str, Callable[[], httpx.Response]]:
    """One request of each kind of work: decided by the group commit, in a worker thread, by the revocation lane,
    by introspection, and the management API's reads and commands."""
    with httpx.Client(base_url=base, timeout=30) as http:
        login = password_login(http, account).json()
        key = client_login(http, account).json()["access_token"]
    client = (account["client"]["client_id"], account["client"]["client_secret"])
    project = f"/v1/projects/{account['project']['id']}"
    owner = bearer(login["access_token"])

    def post(path: str, **kwargs: Any) -> Callable[[], httpx.Response]:
        return lambda: httpx.post(base + path, timeout=WITHIN, **kwargs)

    return {
        "client_credentials": post("/oauth2/token", data={"grant_type": "client_credentials"}, auth=client),
        "refresh_token": post("/oauth2/token", data={"grant_type": "refresh_token", "client_id": "dashboard",
                                                     "refresh_token": login["refresh_token"]}),
        "revoke": post("/oauth2/revoke", data={"token": key}, auth=client),
        "introspect": post("/oauth2/introspect", data={"token": key}, auth=client),
        "tokens": lambda: httpx.get(base + project + "/tokens", headers=owner, timeout=WITHIN),
        "bulk revoke": post(project + "/tokens/revoke", json={"client_id": client[0]}, headers=owner),
    }


def test_an_unreachable_database_answers_503_and_the_server_recovers(server_url: str, redis_url: str,
                                                                     tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with fresh_database(server_url) as url, log.open("wb") as output:
        # To a file: the outage's warnings would fill a pipe nobody reads until the end, and block the server.
        proc, base = start_server({"KEYLEDGER_DATABASE_URL": url, "KEYLEDGER_REDIS_URL": redis_url,
                                   "KEYLEDGER_SECRET_KEY": SECRET_KEY}, output=output)
        try:
            wait_until_up(base, proc)
            with httpx.Client(base_url=base, timeout=30) as http:
                account = signup(http)
            requests = requests_needing_the_store(base, account)
            with outage(url), ThreadPoolExecutor(len(requests)) as pool:
                answers = dict(zip(requests, pool.map(lambda request: request(), requests.values()), strict=True))
            for name, response in answers.items():
                assert response.status_code == 503, (name, response.status_code, response.text)
                if name in {"tokens", "bulk revoke"}:  # RFC 9457 on the management API
                    assert response.headers["content-type"].startswith("application/problem+json"), name
                    assert response.json()["status"] == 503
                else:  # RFC 6749 section 5.2 on the OAuth endpoints
                    assert response.json()["error"] == "temporarily_unavailable", name
            recovered = None
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and recovered != 200:
                recovered = requests["client_credentials"]().status_code
                time.sleep(0.5)
            assert recovered == 200
            deadline = time.monotonic() + 30  # the background loops say when their streak of failures ended
            while b"recovered after" not in log.read_bytes() and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            stop_server(proc)
    logged = log.read_bytes()
    assert b"unhandled" not in logged, logged.decode(errors="replace")[-3000:]
    assert b"recovered after" in logged, logged.decode(errors="replace")[-3000:]

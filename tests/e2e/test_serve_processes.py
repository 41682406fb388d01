"""``keyledger serve --workers 2``: API processes with a listening socket each (SO_REUSEPORT), each running the
projections requests wait on after a command, the supervisor running the token-rate ones (token lookup, audit);
fresh connections land on either process and every one sees every acknowledged write."""

import contextlib
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import (
    SECRET_KEY,
    bearer,
    client_login,
    fresh_database,
    password_login,
    revoke_token,
    signup,
    start_server,
    stop_server,
    wait_until_up,
)

pytestmark = pytest.mark.e2e

ROUNDS = 40


@contextlib.contextmanager
def two_api_processes(server_url: str, redis_url: str) -> Iterator[str]:
    """``keyledger serve --workers 2`` on a fresh database; yields its base URL, then checks that it stopped
    cleanly (exit status 0, no traceback)."""
    with fresh_database(server_url) as url:
        env = {"KEYLEDGER_DATABASE_URL": url, "KEYLEDGER_REDIS_URL": redis_url, "KEYLEDGER_SECRET_KEY": SECRET_KEY}
        proc, base = start_server(env, "--workers", "2")
        try:
            wait_until_up(base, proc)
            yield base
        finally:
            output = stop_server(proc)
        assert proc.returncode == 0, output.decode(errors="replace")
        assert b"Traceback" not in output, output.decode(errors="replace")


def test_two_api_processes_serve_one_port_and_stop_together(server_url: str, redis_url: str) -> None:
    with two_api_processes(server_url, redis_url) as base:
        with httpx.Client(base_url=base, timeout=30) as http:
            account = signup(http)
        path = f"/v1/projects/{account['project']['id']}"
        stale = []
        for n in range(ROUNDS):
            # A new connection per request: the kernel spreads them over both processes by port hash.
            with httpx.Client(base_url=base, timeout=30) as a, httpx.Client(base_url=base, timeout=30) as b:
                token = client_login(a, account).json()["access_token"]
                if b.get(path, headers=bearer(token)).status_code != 200:
                    stale.append(f"round {n}: issued token refused")
                assert revoke_token(a, token, account).status_code == 200
            with httpx.Client(base_url=base, timeout=30) as c:
                if c.get(path, headers=bearer(token)).status_code != 401:
                    stale.append(f"round {n}: revoked token accepted")
        assert stale == []


def test_listings_fed_by_the_supervisor_show_every_acknowledged_revocation(server_url: str, redis_url: str) -> None:
    """The token lookup and audit models run in the supervisor, not in the API processes: a listing read right after
    a revocation (on a fresh connection, so on either process) still waits for them and shows it."""
    with two_api_processes(server_url, redis_url) as base:
        with httpx.Client(base_url=base, timeout=30) as http:
            account = signup(http)
            owner = bearer(password_login(http, account).json()["access_token"])
        project = f"/v1/projects/{account['project']['id']}"
        for n in range(10):
            with httpx.Client(base_url=base, timeout=30) as a:
                token = client_login(a, account).json()["access_token"]
                assert revoke_token(a, token, account).status_code == 200
            with httpx.Client(base_url=base, timeout=30) as b:
                revoked = b.get(f"{project}/tokens", params={"status": "revoked"}, headers=owner).json()["items"]
                assert len(revoked) == n + 1, f"round {n}: the listing missed a revocation"
                audit = b.get(f"{project}/audit", params={"type": "TokenRevoked"}, headers=owner).json()["items"]
                assert len(audit) == n + 1, f"round {n}: the audit ledger missed a revocation"

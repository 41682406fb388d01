"""Invariant 1 across processes: two ``keyledger serve`` processes on one database, many threads.

A token works on the other process the instant its issuance is answered, and is refused by the API and by
introspection on either process the instant its revocation is answered. Every stale answer is counted; none is
allowed.
"""

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.conftest import (
    SECRET_KEY,
    bearer,
    client_login,
    fresh_database,
    introspect_token,
    revoke_token,
    signup,
    start_server,
    stop_server,
    wait_until_up,
)

pytestmark = pytest.mark.e2e

THREADS = 8
ROUNDS_PER_THREAD = 50  # 8 x 50 = 400 rounds of issue, use, revoke, use, introspect
ISSUER = "http://keyledger.test"  # both processes must sign and check the same iss and aud


@pytest.fixture(scope="module")
def two_servers(server_url: str, redis_url: str) -> Iterator[tuple[str, str]]:
    """Two API processes sharing one fresh database, secret key and issuer."""
    with fresh_database(server_url) as url:
        env = {"KEYLEDGER_DATABASE_URL": url, "KEYLEDGER_REDIS_URL": redis_url, "KEYLEDGER_SECRET_KEY": SECRET_KEY,
               "KEYLEDGER_ISSUER": ISSUER}
        started = [start_server(env), start_server(env)]
        try:
            for proc, base in started:
                wait_until_up(base, proc)
            yield started[0][1], started[1][1]
        finally:
            for proc, _ in started:
                output = stop_server(proc)
                if b"Traceback" in output:
                    print(output.decode(errors="replace"))


def one_round(clients: tuple[httpx.Client, httpx.Client], account: dict[str, Any], n: int) -> list[str]:
    """Issue on one process, use on the other, revoke on either, then use and introspect: the stale answers."""
    issuer, user = clients[n % 2], clients[(n + 1) % 2]
    revoker = clients[(n // 2) % 2]
    checker = clients[1] if revoker is clients[0] else clients[0]
    inspector = clients[(n // 4) % 2]
    path = f"/v1/projects/{account['project']['id']}"
    stale: list[str] = []
    issued = client_login(issuer, account)
    if issued.status_code != 200:
        return [f"round {n}: issuance answered {issued.status_code} {issued.text}"]
    token = issued.json()["access_token"]
    used = user.get(path, headers=bearer(token))
    if used.status_code != 200:
        stale.append(f"round {n}: fresh token answered {used.status_code} on the other process")
    revoked = revoke_token(revoker, token, account)
    if revoked.status_code != 200:
        return [*stale, f"round {n}: revocation answered {revoked.status_code} {revoked.text}"]
    after = checker.get(path, headers=bearer(token))
    if after.status_code != 401:
        stale.append(f"round {n}: revoked token answered {after.status_code} on the other process")
    seen = introspect_token(inspector, account, token)
    if seen.status_code != 200 or seen.json() != {"active": False}:
        stale.append(f"round {n}: introspection after revocation answered {seen.status_code} {seen.text}")
    return stale


def test_issue_use_revoke_use_across_two_processes(two_servers: tuple[str, str]) -> None:
    """400 rounds from 8 threads, alternating which process issues, uses, revokes and introspects: zero stale
    answers."""
    first, second = two_servers
    with httpx.Client(base_url=first, timeout=30) as setup:
        accounts = [signup(setup, f"RYW {i}") for i in range(THREADS)]
    barrier = threading.Barrier(THREADS)

    def worker(index: int) -> list[str]:
        stale: list[str] = []
        with httpx.Client(base_url=first, timeout=30) as a, httpx.Client(base_url=second, timeout=30) as b:
            barrier.wait(timeout=30)
            for n in range(ROUNDS_PER_THREAD):
                stale += one_round((a, b), accounts[index], index + n)
        return stale

    with ThreadPoolExecutor(THREADS) as pool:
        stale = [line for lines in pool.map(worker, range(THREADS)) for line in lines]
    assert stale == [], f"{len(stale)} stale answers in {THREADS * ROUNDS_PER_THREAD} rounds:\n" + "\n".join(stale)


def test_both_processes_agree_on_the_issuer(two_servers: tuple[str, str]) -> None:
    """The setup is what the main test assumes: one issuer and one key set for both processes."""
    metadata = []
    for base in two_servers:
        with httpx.Client(base_url=base, timeout=30) as http:
            metadata.append((http.get("/.well-known/oauth-authorization-server").json()["issuer"],
                             http.get("/.well-known/jwks.json").json()))
    assert metadata[0] == metadata[1]
    assert metadata[0][0] == ISSUER

"""``keyledger serve --workers 2``: API processes fed connections by an accepting process, the one with the fewest
open first, each running the projections requests wait on after a command, the supervisor running the token-rate
ones (token lookup, audit); a write acknowledged on one process is seen by the other."""

import contextlib
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

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
def two_api_processes(server_url: str, redis_url: str, pid: list[int] | None = None) -> Iterator[str]:
    """``keyledger serve --workers 2`` on a fresh database; yields its base URL (and appends the server's process id
    to ``pid``), then checks that it stopped cleanly (exit status 0, no traceback)."""
    with fresh_database(server_url) as url:
        env = {"KEYLEDGER_DATABASE_URL": url, "KEYLEDGER_REDIS_URL": redis_url, "KEYLEDGER_SECRET_KEY": SECRET_KEY}
        proc, base = start_server(env, "--workers", "2")
        if pid is not None:
            pid.append(proc.pid)
        try:
            wait_until_up(base, proc)
            yield base
        finally:
            output = stop_server(proc)
        assert proc.returncode == 0, output.decode(errors="replace")
        assert b"Traceback" not in output, output.decode(errors="replace")


@contextlib.contextmanager
def one_on_each(base: str, server: int) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """Two keep-alive clients whose connections are on different API processes, as /proc shows (the accepting process
    may not yet have heard that earlier connections ended, and would then give both to the same one)."""
    port, api = urlsplit(base).port or 0, children_of(server)
    a = httpx.Client(base_url=base, timeout=30)
    b = httpx.Client(base_url=base, timeout=30)
    try:
        a.get("/healthz")
        for _ in range(50):
            b.get("/healthz")
            if len([proc for proc, count in established_on(port).items() if proc in api and count]) == 2:
                break
            b.close()
            time.sleep(0.05)
            b = httpx.Client(base_url=base, timeout=30)
        else:
            raise AssertionError("two connections never landed on two API processes")
        yield a, b
    finally:
        a.close()
        b.close()


def test_two_api_processes_serve_one_port_and_stop_together(server_url: str, redis_url: str) -> None:
    pid: list[int] = []
    with two_api_processes(server_url, redis_url, pid) as base:
        with httpx.Client(base_url=base, timeout=30) as http:
            account = signup(http)
        path = f"/v1/projects/{account['project']['id']}"
        stale = []
        for n in range(ROUNDS):
            with one_on_each(base, pid[0]) as (a, b):  # new connections each round, one on each API process
                token = client_login(a, account).json()["access_token"]
                if b.get(path, headers=bearer(token)).status_code != 200:
                    stale.append(f"round {n}: issued token refused")
                assert revoke_token(a, token, account).status_code == 200
                for name, client in (("revoking", a), ("other", b)):
                    if client.get(path, headers=bearer(token)).status_code != 401:
                        stale.append(f"round {n}: revoked token accepted by the {name} process")
        assert stale == []


def test_listings_fed_by_the_supervisor_show_every_acknowledged_revocation(server_url: str, redis_url: str) -> None:
    """The token lookup and audit models run in the supervisor, not in the API processes: a listing read right after
    a revocation (on the other API process) still waits for them and shows it."""
    pid: list[int] = []
    with two_api_processes(server_url, redis_url, pid) as base:
        with httpx.Client(base_url=base, timeout=30) as http:
            account = signup(http)
            owner = bearer(password_login(http, account).json()["access_token"])
        project = f"/v1/projects/{account['project']['id']}"
        for n in range(10):
            with one_on_each(base, pid[0]) as (a, b):
                token = client_login(a, account).json()["access_token"]
                assert revoke_token(a, token, account).status_code == 200
                revoked = b.get(f"{project}/tokens", params={"status": "revoked"}, headers=owner).json()["items"]
                assert len(revoked) == n + 1, f"round {n}: the listing missed a revocation"
                audit = b.get(f"{project}/audit", params={"type": "TokenRevoked"}, headers=owner).json()["items"]
                assert len(audit) == n + 1, f"round {n}: the audit ledger missed a revocation"


def established_on(port: int) -> Counter[int]:
    """For each process: how many established TCP connections on local ``port`` it holds (Linux's /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":  # 01: ESTABLISHED
                inodes.add(f"socket:[{fields[9]}]")
    held: Counter[int] = Counter()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):  # a process that ended meanwhile
            held[int(proc.name)] += sum(1 for fd in (proc / "fd").iterdir() if os.readlink(fd) in inodes)
    return +held


def children_of(pid: int) -> set[int]:
    found = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(proc.name))
    return found


def test_keep_alive_connections_are_shared_out_evenly(server_url: str, redis_url: str) -> None:
    """16 keep-alive connections: 8 on each API process (the kernel's address hash gave 20 to 12 of 32)."""
    pid: list[int] = []
    with two_api_processes(server_url, redis_url, pid) as base:
        clients = [httpx.Client(base_url=base, timeout=30) for _ in range(16)]
        try:
            for client in clients:
                assert client.get("/healthz").status_code == 200
            held = established_on(urlsplit(base).port or 0)
            api = children_of(pid[0])
            assert sorted(count for proc, count in held.items() if proc in api) == [8, 8]
        finally:
            for client in clients:
                client.close()


def test_a_websocket_upgrade_is_answered_as_plain_http(server_url: str, redis_url: str) -> None:
    """keyledger serves no WebSocket: an upgrade request gets the plain HTTP answer, and its connection stays one
    whose end the accepting process hears of (an upgraded one would be counted open for ever)."""
    upgrade = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    pid: list[int] = []
    with two_api_processes(server_url, redis_url, pid) as base, one_on_each(base, pid[0]) as (a, b):
        for client in (a, b):
            response = client.get("/healthz", headers=upgrade)
            assert response.status_code == 200, response.text

"""``keyledger worker --processes 2``: the parent supervises its worker processes. One that dies takes the whole down
(status 1, the other stopped), where the parent used to stay up with fewer workers than asked and look healthy;
SIGTERM stops them all (status 0)."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import SECRET_KEY, fresh_database

pytestmark = pytest.mark.e2e


def worker_children(parent: int) -> list[int]:
    """The worker processes ``parent`` spawned (not multiprocessing's resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@contextmanager
def workers(server_url: str, redis_url: str) -> Iterator[tuple[subprocess.Popen[bytes], list[int]]]:
    """``keyledger worker --processes 2`` on a database of its own, once both worker processes are up."""
    with fresh_database(server_url) as url:
        env = {**os.environ, "KEYLEDGER_DATABASE_URL": url, "KEYLEDGER_REDIS_URL": redis_url,
               "KEYLEDGER_SECRET_KEY": SECRET_KEY}
        proc = subprocess.Popen([sys.executable, "-m", "infrastructure.cli", "worker", "--processes", "2",
                                 "--threads", "1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        children: list[int] = []
        try:
            for _ in range(300):
                children = worker_children(proc.pid)
                if len(children) == 2 or proc.poll() is not None:
                    break
                time.sleep(0.1)
            assert len(children) == 2, f"worker processes not started (status {proc.poll()})"
            yield proc, children
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for child in children:  # reparented once the parent is gone: found by the pids seen at the start
                if alive(child):
                    os.kill(child, signal.SIGKILL)


def test_a_worker_process_that_dies_takes_the_others_down_with_status_1(server_url: str, redis_url: str) -> None:
    with workers(server_url, redis_url) as (proc, (first, second)):
        os.kill(first, signal.SIGKILL)
        try:
            proc.wait(timeout=45)
        except subprocess.TimeoutExpired:
            pytest.fail("the parent stayed up with one worker process of two")
        assert proc.returncode == 1
        assert not alive(second)


def test_sigterm_stops_the_parent_and_every_worker_process_with_status_0(server_url: str, redis_url: str) -> None:
    with workers(server_url, redis_url) as (proc, children):
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=45)
        assert proc.returncode == 0
        assert not any(alive(child) for child in children)

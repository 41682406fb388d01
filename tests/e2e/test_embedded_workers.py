"""Embedded ``keyledger serve`` runs a worker and the scheduler in its own process, and stops them cleanly."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import free_port, start_server, stop_server, wait_until_up
from tests.e2e.test_embedded import embedded_env

pytestmark = pytest.mark.e2e

JOB_LINES = ('"event":"scheduler started"', '"event":"worker started"', '"job":"heartbeat"', '"job":"expire-tokens"',
             '"job":"expire-client-secrets"', '"job":"rotate-signing-keys"',
             '"job":"prune-revocation-list"', '"job":"revoke-orphaned-tokens"')


def wait_for_lines(log: Path, lines: tuple[str, ...], timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if all(line in text for line in lines):
            return text
        time.sleep(0.2)
    raise AssertionError(f"missing job lines in:\n{text}")


def test_embedded_serve_runs_the_periodic_jobs_and_stops_cleanly(tmp_path: Path) -> None:
    data_dir, log = str(tmp_path / "kl"), tmp_path / "serve.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "KEYLEDGER_ISSUER": url, **embedded_env(data_dir)}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "infrastructure.cli", "serve", "--port", str(port)], env=env,
                                stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_until_up(url, proc, timeout=120)
            # The scheduler enqueues every periodic job in its first slot; the in-process worker runs them.
            wait_for_lines(log, JOB_LINES)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    text = log.read_text(errors="replace")
    assert proc.returncode == 128 + signal.SIGTERM, text  # the SIGTERM exit, after a clean unwind
    assert '"event":"worker stopped"' in text and '"outcome":"failed' not in text, text
    # Everything was released (the data dir's lock, the embedded servers): a second start comes up.
    again, again_url = start_server(embedded_env(data_dir))
    try:
        wait_until_up(again_url, again, timeout=120)
    finally:
        stop_server(again)

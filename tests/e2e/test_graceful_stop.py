"""A stopping ``keyledger serve`` gives the requests under way a bounded time (``cli.GRACEFUL_STOP``), not for ever:
a client trickling its body must not keep the server, and the embedded servers it may run, up after SIGTERM."""

import signal
import socket
import subprocess
import time
from urllib.parse import urlsplit

import pytest

from infrastructure.cli import GRACEFUL_STOP
from tests.conftest import SECRET_KEY, fresh_database, start_server, stop_server, wait_until_up

pytestmark = pytest.mark.e2e


def test_sigterm_stops_the_server_while_a_client_is_still_sending_its_body(server_url: str, redis_url: str) -> None:
    with fresh_database(server_url) as url:
        env = {"KEYLEDGER_DATABASE_URL": url, "KEYLEDGER_REDIS_URL": redis_url, "KEYLEDGER_SECRET_KEY": SECRET_KEY}
        proc, base = start_server(env)
        try:
            wait_until_up(base, proc)
            address = urlsplit(base)
            with socket.create_connection((address.hostname, address.port)) as slow:
                slow.sendall(b"POST /oauth2/revoke HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
                             b"Content-Type: application/x-www-form-urlencoded\r\n\r\ntoken=abc")
                time.sleep(1.0)  # the request is under way: its handler waits for the rest of the body
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=GRACEFUL_STOP + 20)
                except subprocess.TimeoutExpired:
                    pytest.fail("the server was still up 30 s after SIGTERM, waiting for the slow request")
        finally:
            output = stop_server(proc)
        assert proc.returncode == 128 + signal.SIGTERM, output.decode(errors="replace")

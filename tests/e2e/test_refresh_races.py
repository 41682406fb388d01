"""Refreshes with one refresh token in flight together (browser tabs, retries): one wins, and its new tokens stay good.

The requests are written to open connections back to back, so all reach the server before any is answered; each
loser is refused with ``invalid_grant`` and must not count as reuse, which would revoke the winner's new pair
(application.oauth.in_flight; tests/unit/test_refresh_in_flight.py pins the rule with exact instants).
"""

import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import pytest

from tests.conftest import bearer, own_server, password_login, refresh_login, signup

pytestmark = pytest.mark.e2e

ROUNDS = 5
COPIES = 8


def simultaneous(url: str, form: dict[str, str], copies: int) -> list[tuple[int, bytes]]:
    """POSTs ``form`` to /oauth2/token on ``copies`` connections at once: (status, body) of each answer.

    Each connection first gets an answer to a cheap request, so the server has accepted and set up all of them before
    the refreshes leave: on a loaded machine a connection still in the accept queue could otherwise be read only after
    the winner was answered, and its request would rightly count as a replay."""
    address = urlsplit(url)
    body = urlencode(form).encode()
    host = f"Host: {address.netloc}\r\n"
    warm = f"GET /.well-known/jwks.json HTTP/1.1\r\n{host}\r\n".encode()
    request = (f"POST /oauth2/token HTTP/1.1\r\n{host}Connection: close\r\nContent-Type: "
               f"application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    connections = [socket.create_connection((address.hostname, address.port), timeout=30) for _ in range(copies)]
    try:
        for connection in connections:
            connection.sendall(warm)
            assert _answer(connection)[0] == 200
        for connection in connections:  # every connection served once: the writes below leave within microseconds
            connection.sendall(request)
        return [_answer(connection) for connection in connections]
    finally:
        for connection in connections:
            connection.close()


def _answer(connection: socket.socket) -> tuple[int, bytes]:
    """One response (its status and body), read by its Content-Length, or to the end of a closed connection."""
    raw = b""
    while b"\r\n\r\n" not in raw and (chunk := connection.recv(65536)):
        raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in lines if line.lower().startswith(b"content-length:")), None)
    while (length is None or len(body) < length) and (chunk := connection.recv(65536)):
        body += chunk
    return int(lines[0].split(b" ", 2)[1]), body


def test_the_winner_of_simultaneous_refreshes_keeps_its_tokens(live_server: str, http: httpx.Client) -> None:
    account = signup(http)
    for _ in range(ROUNDS):
        login: dict[str, Any] = password_login(http, account).json()
        answers = simultaneous(live_server, {"grant_type": "refresh_token", "client_id": "dashboard",
                                             "refresh_token": login["refresh_token"]}, copies=COPIES)
        assert sorted(status for status, _ in answers) == [200] + [400] * (COPIES - 1), answers
        assert b'"invalid_grant"' in next(body for status, body in answers if status == 400)
        winner = httpx.Response(200, content=next(body for status, body in answers if status == 200)).json()
        assert http.get("/v1/me", headers=bearer(winner["access_token"])).status_code == 200
        assert refresh_login(http, winner["refresh_token"]).status_code == 200  # the family was not revoked


LEEWAY = 1  # seconds


@pytest.fixture(scope="module")
def lenient(server_url: str, redis_url: str) -> Iterator[str]:
    """A server of its own that allows stragglers a one-second leeway (KEYLEDGER_REFRESH_REUSE_LEEWAY)."""
    with own_server(server_url, redis_url, KEYLEDGER_REFRESH_REUSE_LEEWAY=str(LEEWAY)) as base:
        yield base


def test_a_straggler_inside_the_leeway_revokes_nothing_and_a_replay_after_it_does(lenient: str) -> None:
    with httpx.Client(base_url=lenient, timeout=30) as http:
        login: dict[str, Any] = password_login(http, signup(http)).json()
        winner = refresh_login(http, login["refresh_token"]).json()
        late = refresh_login(http, login["refresh_token"])  # after the answer, well inside one second
        assert late.status_code == 400 and late.json()["error"] == "invalid_grant"
        assert http.get("/v1/me", headers=bearer(winner["access_token"])).status_code == 200

        time.sleep(LEEWAY + 0.2)
        replay = refresh_login(http, login["refresh_token"])
        assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
        assert http.get("/v1/me", headers=bearer(winner["access_token"])).status_code == 401  # the family is revoked
        assert refresh_login(http, winner["refresh_token"]).status_code == 400

"""Posting one notification to its webhook: Standard Webhooks headers, the SSRF guard, no redirects.

The URL is resolved and checked (``infrastructure.urlguard.resolve``) right before the attempt and the connection is
made to that checked address, with the URL's host kept for the ``Host`` header and TLS (SNI and certificate
verification), so DNS cannot answer differently between the check and the connection. Redirects are not followed.
"""

import contextlib
import http.client
import socket
import ssl
import threading
import time
from dataclasses import dataclass

from infrastructure.crypto.webhook_secrets import sign
from infrastructure.urlguard import Target, UnsafeUrl, resolve
from projections.outbox import MAX_RESPONSE_BODY, Attempt

USER_AGENT = "keyledger-webhooks/1"


def _connect(address: str, port: int, timeout: float | None) -> socket.socket:
    """A TCP connection to the literal ``address`` (no resolution at all, unlike ``socket.create_connection``)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((address, port))
    except BaseException:
        sock.close()
        raise
    return sock


class _PinnedHTTP(http.client.HTTPConnection):
    """HTTP to a checked address, whatever the host name would resolve to now."""

    def __init__(self, target: Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self._address = target.address

    def connect(self) -> None:
        self.sock = _connect(self._address, self.port, self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to a checked address; the certificate is verified against the URL's host name."""

    def __init__(self, target: Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout, context=ssl.create_default_context())
        self._address = target.address

    def connect(self) -> None:
        sock = _connect(self._address, self.port, self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Message:
    """What one attempt sends: the notification's id (``webhook-id``), its JSON body and the signing secret."""

    id: str
    body: bytes
    secret: str


def headers(message: Message, timestamp: int) -> dict[str, str]:
    """The Standard Webhooks headers of an attempt made at ``timestamp`` (Unix seconds)."""
    return {"content-type": "application/json", "user-agent": USER_AGENT, "webhook-id": message.id,
            "webhook-timestamp": str(timestamp), "webhook-signature": sign(message.secret, message.id, timestamp,
                                                                          message.body)}


def post(url: str, message: Message, *, allow_private: bool, timeout: float) -> Attempt:
    """Makes one attempt and describes its outcome (never raises for the receiver's or the network's faults)."""
    started = time.perf_counter()

    def elapsed() -> float:
        return round((time.perf_counter() - started) * 1000, 1)

    try:
        target = resolve(url, allow_private=allow_private)
    except UnsafeUrl as exc:
        return Attempt(status_code=None, error=f"refused: {exc}", duration_ms=elapsed(), response_body=None)
    connection_class = _PinnedHTTPS if target.scheme == "https" else _PinnedHTTP
    connection = connection_class(target, timeout)
    # The socket timeout bounds each read; a receiver trickling a byte at a time would still hold the worker: the
    # whole attempt is cut at ``timeout`` seconds by shutting the socket from a timer.
    cut = threading.Event()
    watchdog = threading.Timer(timeout, _abort, args=(connection, cut))
    watchdog.daemon = True
    watchdog.start()
    try:
        connection.request("POST", target.path, body=message.body, headers=headers(message, int(time.time())))
        response = connection.getresponse()
        body = response.read(MAX_RESPONSE_BODY).decode("utf-8", errors="replace")
        if cut.is_set():  # what was read before the cut is not an answer
            return Attempt(status_code=None, error="timed out", duration_ms=elapsed(), response_body=None)
        return Attempt(status_code=response.status, error=None, duration_ms=elapsed(), response_body=body)
    except TimeoutError:
        return Attempt(status_code=None, error="timed out", duration_ms=elapsed(), response_body=None)
    except (OSError, http.client.HTTPException) as exc:
        return Attempt(status_code=None, error=f"{type(exc).__name__}: {exc}"[:200], duration_ms=elapsed(),
                       response_body=None)
    except Exception as exc:  # anything else is recorded too: an unrecorded attempt would be retried forever
        return Attempt(status_code=None, error=type(exc).__name__, duration_ms=elapsed(), response_body=None)
    finally:
        watchdog.cancel()
        connection.close()


def _abort(connection: http.client.HTTPConnection, cut: threading.Event) -> None:
    """Ends an attempt that outlasted its deadline: the blocked read fails at once and is recorded as an error."""
    cut.set()
    sock = connection.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

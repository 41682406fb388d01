"""A real HTTP receiver for webhook tests: a threaded http.server on 127.0.0.1 recording every request."""

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from infrastructure.crypto.webhook_secrets import verify


@dataclass
class Received:
    """One request as the receiver got it."""

    headers: dict[str, str]
    body: bytes

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    def valid_for(self, secret: str) -> bool:
        """Whether the Standard Webhooks signature verifies with ``secret``."""
        return verify(secret, self.id, int(self.headers["webhook-timestamp"]), self.body,
                      self.headers["webhook-signature"])


@dataclass
class Receiver:
    """Answers with ``statuses`` in turn (then 200); ``block_first`` holds the first request until released."""

    statuses: list[int] = field(default_factory=list)
    block_first: bool = False
    requests: list[Received] = field(default_factory=list)
    first_arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("content-length", "0"))
        body = handler.rfile.read(length)
        with self.lock:
            self.requests.append(Received(headers={k.lower(): v for k, v in handler.headers.items()}, body=body))
            first = len(self.requests) == 1
            status = self.statuses.pop(0) if self.statuses else 200
        if first and self.block_first:
            self.first_arrived.set()
            self.release.wait(60)
            return  # the sender is gone by now: answer nothing
        handler.send_response(status)
        handler.send_header("content-type", "text/plain")
        reply = b"ok" if status < 300 else b"no thanks " * 300
        handler.send_header("content-length", str(len(reply)))
        handler.end_headers()
        handler.wfile.write(reply)

    def ids(self) -> list[str]:
        with self.lock:
            return [r.id for r in self.requests]

    def types(self) -> list[str]:
        with self.lock:
            return [json.loads(r.body)["type"] for r in self.requests]


@contextlib.contextmanager
def serve(receiver: Receiver) -> Iterator[Receiver]:
    """Runs ``receiver`` on a free port until the generator is closed."""
    owner = receiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            owner.handle(self)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook?channel=tests"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.release.set()
        server.shutdown()
        server.server_close()

"""How soon a webhook's first attempt follows its event: ``python -m benchmarks.webhook_latency``.

Needs a running deployment that may call this machine: ``keyledger serve``, ``keyledger worker`` and
``keyledger scheduler`` with ``KEYLEDGER_WEBHOOK_ALLOW_PRIVATE=true``. It signs up a project, registers a local
receiver for ``member.added``, then adds members one at a time and measures, for each, the time from the 201 of
``POST .../members`` being sent to the receiver getting the notification. Prints the distribution.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def _call(url: str, method: str, path: str, body: dict[str, Any] | None = None, token: str | None = None,
          form: dict[str, str] | None = None) -> dict[str, Any]:
    headers = {"content-type": "application/json"}
    data = json.dumps(body).encode() if body is not None else None
    if form is not None:
        headers["content-type"] = "application/x-www-form-urlencoded"
        data = urllib.parse.urlencode(form).encode()
    if token:
        headers["authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url + path, data=data, headers=headers, method=method)
    with urllib.request.urlopen(request, timeout=30) as response:
        return dict(json.loads(response.read() or b"{}"))


def _signup(url: str) -> tuple[dict[str, Any], str]:
    email, password = f"bench-{secrets.token_hex(6)}@example.com", secrets.token_urlsafe(16)
    made = _call(url, "POST", "/v1/signup", {"email": email, "password": password, "project_name": "bench"})
    return made, password


def _receiver() -> tuple[ThreadingHTTPServer, list[float]]:
    arrivals: list[float] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            arrivals.append(time.monotonic())
            self.rfile.read(int(self.headers.get("content-length", "0")))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, arrivals


def measure(url: str, samples: int) -> list[float]:
    """Seconds from each member addition's answer to its notification's first attempt."""
    server, arrivals = _receiver()
    try:
        owner, password = _signup(url)
        token = _call(url, "POST", "/oauth2/token", form={"grant_type": "password", "client_id": "dashboard",
                                                          "username": owner["user"]["email"],
                                                          "password": password})["access_token"]
        project = owner["project"]["id"]
        hook = f"http://127.0.0.1:{server.server_address[1]}/hook"
        _call(url, "POST", f"/v1/projects/{project}/webhooks", {"url": hook, "event_types": ["member.added"]}, token)
        latencies = []
        for _ in range(samples):
            other, _ = _signup(url)
            seen = len(arrivals)
            _call(url, "POST", f"/v1/projects/{project}/members", {"email": other["user"]["email"],
                                                                   "role": "developer"}, token)
            answered = time.monotonic()
            deadline = answered + 30
            while len(arrivals) == seen and time.monotonic() < deadline:
                time.sleep(0.002)
            if len(arrivals) == seen:
                raise SystemExit("no delivery within 30 s: are a worker and a scheduler running?")
            latencies.append(arrivals[seen] - answered)
            time.sleep(0.3)  # not in step with the scheduler's one-second slots
        return latencies
    finally:
        server.shutdown()


def main() -> int:
    """Runs the measurement and prints it."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.webhook_latency", description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--samples", type=int, default=20)
    args = parser.parse_args()
    latencies = sorted(measure(args.url.rstrip("/"), args.samples))
    print(f"first attempt after the event's answer, {len(latencies)} samples: min {latencies[0]:.3f} s, "
          f"median {statistics.median(latencies):.3f} s, max {latencies[-1]:.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Unmeasured setup: parse and check the target URL, sign up bench accounts, obtain tokens.

Setup runs once, in the parent process; scenarios turn its results into prebuilt requests that are handed
to the worker processes.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import secrets
import string
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO
from urllib.parse import quote_plus, urlencode, urlsplit

from benchmarks.httpclient import Connection, HttpProtocolError, Target, build_request

__all__ = ["Account", "SetupContext", "SetupError", "basic_auth", "form", "parse_target"]

DASHBOARD_CLIENT_ID = "dashboard"
_FORM_HEADERS = {"Content-Type": "application/x-www-form-urlencoded"}
_SETUP_PARALLEL = 16  # connections used by bulk setup requests
_PROGRESS_INTERVAL = 0.5
_PASSWORD_ALPHABET = string.ascii_letters + string.digits


class SetupError(Exception):
    """Setup could not be done (server down, unexpected answer); the message says why."""


def parse_target(url: str, *, allow_remote: bool = False) -> Target:
    """Parse the server URL and refuse anything but plain HTTP to a loopback host.

    Args:
        url: e.g. ``http://127.0.0.1:8000``.
        allow_remote: Accept a host that is not loopback.

    Returns:
        The target.

    Raises:
        ValueError: The URL is not usable, or its host is not loopback and ``allow_remote`` is false.
    """
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"only http:// URLs are supported, got {url!r}")
    host = parts.hostname
    if not host:
        raise ValueError(f"no host in {url!r}")
    if not allow_remote and not _is_loopback(host):
        raise ValueError(f"refusing to load non-loopback host {host!r} (pass --allow-remote if you mean it)")
    port = parts.port or 80
    host_header = parts.netloc.rpartition("@")[2]
    return Target(host=host, port=port, host_header=host_header, base_path=parts.path.rstrip("/"))


def _is_loopback(host: str) -> bool:
    """Return whether ``host`` is ``localhost`` or a loopback IP address."""
    if host.lower() in {"localhost", "localhost."} or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def form(fields: dict[str, str]) -> bytes:
    """Encode ``fields`` as an ``application/x-www-form-urlencoded`` body."""
    return urlencode(fields).encode("ascii")


def basic_auth(client_id: str, client_secret: str) -> str:
    """Return the ``Authorization`` value for client_secret_basic (RFC 6749 section 2.3.1).

    Both parts are form-urlencoded before being joined with ``:`` and base64-encoded.
    """
    raw = f"{quote_plus(client_id)}:{quote_plus(client_secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


@dataclass(slots=True)
class Account:
    """A bench user with their first project and that project's client (API key)."""

    email: str
    password: str
    user_id: str
    project_id: str
    client_id: str
    client_secret: str


@dataclass(slots=True)
class SetupContext:
    """State shared by scenario builders: the target, the bench accounts and cached tokens.

    Attributes:
        target: The server.
        timeout: Seconds allowed for each setup request.
        concurrency: Virtual users the scenario will run with (across all processes); scenarios with per-user
            state build one session per virtual user.
        window: Seconds of load the scenario will run (warm-up plus measurement), to size consumable pools.
        revoke_rate: Estimated revocations per second, to size the ``revoke`` scenario's token pool.
        accounts: Accounts created by :meth:`signup`.
        progress: Where bulk setup shows its progress.
    """

    target: Target
    timeout: float = 30.0
    concurrency: int = 1
    window: float = 0.0
    revoke_rate: float = 400.0
    accounts: list[Account] = field(default_factory=list)
    progress: TextIO = field(default=sys.stderr, repr=False)
    _tokens: dict[str, dict[str, Any]] = field(default_factory=dict)

    async def call(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> tuple[int, bytes]:
        """Make one setup request on a fresh connection.

        Raises:
            SetupError: The server could not be reached or did not answer in time.
        """
        connection = Connection(self.target)
        try:
            async with asyncio.timeout(self.timeout):
                return await connection.request(build_request(self.target, method, path, headers, body))
        except (OSError, asyncio.IncompleteReadError, HttpProtocolError, TimeoutError) as exc:
            raise SetupError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        finally:
            connection.close()

    async def call_json(
        self, method: str, path: str, expect: int, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> dict[str, Any]:
        """Make one setup request and return its JSON object body.

        Raises:
            SetupError: The status is not ``expect`` or the body is not a JSON object.
        """
        status, payload = await self.call(method, path, headers, body)
        if status != expect:
            raise SetupError(f"{method} {path}: expected {expect}, got {status}: {payload[:300]!r}")
        try:
            data = json.loads(payload)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise SetupError(f"{method} {path}: body is not a JSON object: {payload[:300]!r}")
        return data

    async def signup(self, count: int) -> list[Account]:
        """Sign up ``count`` new random users (each gets a project and a client) and keep them."""
        self.accounts.extend(await asyncio.gather(*(self._signup_one() for _ in range(count))))
        return self.accounts

    async def _signup_one(self) -> Account:
        """Sign up one random user."""
        email = f"bench-{secrets.token_hex(8)}@example.com"
        password = "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(20))
        body = json.dumps({"email": email, "password": password, "project_name": "bench"}).encode()
        data = await self.call_json("POST", "/v1/signup", 201, {"Content-Type": "application/json"}, body)
        try:
            return Account(
                email=email,
                password=password,
                user_id=str(data["user"]["id"]),
                project_id=str(data["project"]["id"]),
                client_id=str(data["client"]["client_id"]),
                client_secret=str(data["client"]["client_secret"]),
            )
        except (KeyError, TypeError) as exc:
            raise SetupError(f"POST /v1/signup: unexpected body {json.dumps(data)[:300]}") from exc

    async def password_tokens(self, account: Account) -> dict[str, Any]:
        """Return the token response of a password grant for ``account`` (cached per account).

        Raises:
            SetupError: The grant failed or answered without an ``access_token``.
        """
        if account.email not in self._tokens:
            fields = {
                "grant_type": "password",
                "username": account.email,
                "password": account.password,
                "client_id": DASHBOARD_CLIENT_ID,
            }
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            data = await self.call_json("POST", "/oauth2/token", 200, headers, form(fields))
            if not isinstance(data.get("access_token"), str):
                raise SetupError(f"password grant for {account.email}: no access_token in {json.dumps(data)[:300]}")
            self._tokens[account.email] = data
        return self._tokens[account.email]

    async def fetch_many(
        self, requests: Sequence[bytes], *, label: str, parallel: int = _SETUP_PARALLEL
    ) -> list[tuple[int, bytes]]:
        """Send many setup requests over ``parallel`` keep-alive connections, showing progress on stderr.

        Args:
            requests: Prebuilt requests.
            label: Shown in the progress line, e.g. ``"[revoke] issuing tokens"``.
            parallel: Connections to use.

        Returns:
            ``(status, body)`` of each request, in the order of ``requests``.

        Raises:
            SetupError: A request could not be sent or was not answered in time.
        """
        results: list[tuple[int, bytes]] = [(0, b"")] * len(requests)
        pending = iter(range(len(requests)))
        done = 0

        async def lane() -> None:
            nonlocal done
            connection = Connection(self.target)
            try:
                for index in pending:  # shared by the lanes: each index is taken once
                    async with asyncio.timeout(self.timeout):
                        results[index] = await connection.request(requests[index])
                    done += 1
            except (OSError, asyncio.IncompleteReadError, HttpProtocolError, TimeoutError) as exc:
                raise SetupError(f"{label}: {type(exc).__name__}: {exc}") from exc
            finally:
                connection.close()

        started = time.perf_counter()
        lanes = [asyncio.create_task(lane()) for _ in range(min(parallel, len(requests)))]
        try:
            while lanes and not all(task.done() for task in lanes):
                await asyncio.wait(lanes, timeout=_PROGRESS_INTERVAL, return_when=asyncio.FIRST_EXCEPTION)
                if any(task.done() and task.exception() for task in lanes):
                    break
                self.progress.write(f"\r{label}: {done}/{len(requests)}")
                self.progress.flush()
            for task in lanes:
                if task.done():
                    task.result()  # raises the first failure
        finally:
            for task in lanes:
                task.cancel()
            await asyncio.gather(*lanes, return_exceptions=True)
        self.progress.write(f"\r{label}: {done}/{len(requests)} in {time.perf_counter() - started:.1f} s\n")
        self.progress.flush()
        return results

    async def client_tokens(self, wanted: Sequence[tuple[Account, int]], *, label: str) -> list[list[str]]:
        """Issue client_credentials access tokens (client_secret_basic) in bulk.

        Args:
            wanted: ``(account, count)`` pairs; an account may appear more than once.
            label: Progress label.

        Returns:
            For each pair, ``count`` access tokens of that account's client.

        Raises:
            SetupError: A grant failed.
        """
        requests = [
            build_request(
                self.target,
                "POST",
                "/oauth2/token",
                {**_FORM_HEADERS, "Authorization": basic_auth(account.client_id, account.client_secret)},
                form({"grant_type": "client_credentials"}),
            )
            for account, count in wanted
            for _ in range(count)
        ]
        tokens = iter(
            [
                _token_field(status, body, "access_token")
                for status, body in await self.fetch_many(requests, label=label)
            ]
        )
        return [[next(tokens) for _ in range(count)] for _, count in wanted]

    async def refresh_logins(self, accounts: Sequence[Account], *, label: str) -> list[str]:
        """Log each account in (once per entry, not cached) with the password grant; return the refresh tokens.

        Each entry starts a refresh-token family of its own, so one chain's rotations never touch another's.

        Raises:
            SetupError: A grant failed.
        """
        requests = [
            build_request(
                self.target,
                "POST",
                "/oauth2/token",
                _FORM_HEADERS,
                form(
                    {
                        "grant_type": "password",
                        "username": account.email,
                        "password": account.password,
                        "client_id": DASHBOARD_CLIENT_ID,
                    }
                ),
            )
            for account in accounts
        ]
        # argon2id makes password grants CPU-bound on the server: a few connections are enough.
        responses = await self.fetch_many(requests, label=label, parallel=4)
        return [_token_field(status, body, "refresh_token") for status, body in responses]


def _token_field(status: int, body: bytes, name: str) -> str:
    """Return the string field ``name`` of a 200 token response.

    Raises:
        SetupError: The status is not 200 or the field is missing.
    """
    if status == 200:
        try:
            value = json.loads(body).get(name)
        except (ValueError, AttributeError):
            value = None
        if isinstance(value, str):
            return value
    raise SetupError(f"POST /oauth2/token: expected 200 with {name}, got {status}: {body[:300]!r}")

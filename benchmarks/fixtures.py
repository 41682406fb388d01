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
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus, urlencode, urlsplit

from benchmarks.httpclient import Connection, HttpProtocolError, Target, build_request

__all__ = ["Account", "SetupContext", "SetupError", "basic_auth", "form", "parse_target"]

DASHBOARD_CLIENT_ID = "dashboard"
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
        accounts: Accounts created by :meth:`signup`.
    """

    target: Target
    timeout: float = 30.0
    accounts: list[Account] = field(default_factory=list)
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

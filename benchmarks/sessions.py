"""Per-virtual-user state, for scenarios whose next request depends on an earlier response.

Most scenarios send prebuilt requests round-robin. A scenario that cannot (a refresh token is used up by each
request; a revoked token cannot be revoked again) gives each virtual user its own :class:`Session` instead. A
session may do unmeasured work on its connection before each measured request (:meth:`Session.prepare`), then
builds the measured request and judges its response. Sessions are picklable: the whole tuple goes to every
worker process, and virtual user ``i`` (numbered across all processes) uses session ``i`` only, so no two
virtual users ever share one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from benchmarks.fixtures import DASHBOARD_CLIENT_ID, form
from benchmarks.httpclient import Connection, Target, build_request

__all__ = [
    "DashboardRevokeQueue",
    "LogoutQueue",
    "PooledRevocations",
    "RefreshChain",
    "RevokeQueue",
    "Session",
    "SessionStepError",
    "describe_http_error",
    "json_object",
]

FORM_HEADERS = {"Content-Type": "application/x-www-form-urlencoded"}
_SAMPLE_CHARS = 200


class SessionStepError(Exception):
    """An unmeasured step of a session failed; the virtual user counts one error and tries again."""


def describe_http_error(status: int, body: bytes, what: str = "") -> str:
    """Describe an unexpected response the way the worker does (status, optional note, truncated body)."""
    note = f" {what}" if what else ""
    return f"HTTP {status}{note}: {body[:_SAMPLE_CHARS]!r}"


def json_object(body: bytes) -> dict[str, Any] | None:
    """Return ``body`` parsed as a JSON object, or None if it is not one."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


async def _password_refresh_token(
    connection: Connection, target: Target, *, email: str, password: str, what: str
) -> str:
    """Logs in on ``connection`` with the password grant (public client ``dashboard``), unmeasured; the refresh token.

    Raises:
        SessionStepError: The login was refused (``what`` says what it was for).
    """
    fields = {"grant_type": "password", "username": email, "password": password, "client_id": DASHBOARD_CLIENT_ID}
    status, body = await connection.request(build_request(target, "POST", "/oauth2/token", FORM_HEADERS, form(fields)))
    token = (json_object(body) or {}).get("refresh_token") if status == 200 else None
    if not isinstance(token, str):
        raise SessionStepError(f"{what}: " + describe_http_error(status, body))
    return token


class Session:
    """One virtual user's state. Subclasses implement :meth:`next_request` and :meth:`outcome`."""

    __slots__ = ()

    async def prepare(self, connection: Connection) -> int:
        """Do unmeasured work on ``connection`` before the next measured request.

        Returns:
            How many unmeasured (helper) requests were sent.

        Raises:
            SessionStepError: The step failed; the virtual user counts an error and calls this again.
            OSError: The connection broke (also counted as an error).
        """
        return 0

    def next_request(self) -> bytes:
        """Return the bytes of the next measured request."""
        raise NotImplementedError

    def outcome(self, status: int, body: bytes) -> str | None:
        """Digest the measured response; return an error description, or None if it is a success."""
        raise NotImplementedError

    def lost(self) -> None:
        """The measured request failed below HTTP: whether the server acted on it is unknown."""


@dataclass(slots=True)
class RefreshChain(Session):
    """A login of its own whose refresh token is rotated by every measured request (``refresh_token`` grant).

    After any failure the chain's current token may already be used up (and presenting it again would be reuse,
    which revokes the family), so the session logs in again with the password grant, unmeasured, first.
    """

    target: Target
    email: str
    password: str
    refresh_token: str
    broken: bool = False

    async def prepare(self, connection: Connection) -> int:
        """Log in again (password grant) if the previous rotation failed."""
        if not self.broken:
            return 0
        token = await _password_refresh_token(
            connection, self.target, email=self.email, password=self.password, what="re-login after a failed refresh"
        )
        self.refresh_token, self.broken = token, False
        return 1

    def next_request(self) -> bytes:
        """The refresh grant with the chain's current refresh token."""
        fields = {"grant_type": "refresh_token", "client_id": DASHBOARD_CLIENT_ID, "refresh_token": self.refresh_token}
        return build_request(self.target, "POST", "/oauth2/token", FORM_HEADERS, form(fields))

    def outcome(self, status: int, body: bytes) -> str | None:
        """Keep the new refresh token; anything but 200 with a refresh token is an error."""
        if status != 200:
            self.broken = True
            return describe_http_error(status, body)
        token = (json_object(body) or {}).get("refresh_token")
        if not isinstance(token, str):
            self.broken = True
            return describe_http_error(status, body, "without refresh_token")
        self.refresh_token = token
        return None

    def lost(self) -> None:
        """The token may have been used up by a request whose answer was lost."""
        self.broken = True


@dataclass(slots=True)
class PooledRevocations(Session):
    """Revokes one fresh token per measured request (RFC 7009), taken from a pool made in setup.

    If the pool runs out, each further token is made on the virtual user's connection (``fresh``) before the
    revocation: unmeasured, but it loads the server, so the run reports how many such helper requests there were.
    Subclasses say how a token is made and how it is revoked (``next_request``).
    """

    target: Target
    tokens: list[str]
    current: str = field(default="", init=False)

    async def prepare(self, connection: Connection) -> int:
        """Take the next pooled token, or make one if the pool is empty."""
        if self.tokens:
            self.current = self.tokens.pop()
            return 0
        self.current = await self.fresh(connection)
        return 1

    async def fresh(self, connection: Connection) -> str:
        """A new token to revoke, made with one unmeasured request.

        Raises:
            SessionStepError: The server did not give one.
        """
        raise NotImplementedError

    def outcome(self, status: int, body: bytes) -> str | None:
        """Only 200 is a success."""
        return None if status == 200 else describe_http_error(status, body)


@dataclass(slots=True)
class RevokeQueue(PooledRevocations):
    """Revokes client_credentials access tokens, authenticated as the issuing client (HTTP Basic); a fresh one
    comes from a client_credentials grant."""

    authorization: str = ""

    async def fresh(self, connection: Connection) -> str:
        """Issue one token with the client_credentials grant."""
        request = build_request(
            self.target,
            "POST",
            "/oauth2/token",
            {**FORM_HEADERS, "Authorization": self.authorization},
            form({"grant_type": "client_credentials"}),
        )
        status, body = await connection.request(request)
        token = (json_object(body) or {}).get("access_token") if status == 200 else None
        if not isinstance(token, str):
            raise SessionStepError("issuing a token to revoke: " + describe_http_error(status, body))
        return token

    def next_request(self) -> bytes:
        """``POST /oauth2/revoke`` for the current token."""
        body = form({"token": self.current, "token_type_hint": "access_token"})
        return build_request(
            self.target, "POST", "/oauth2/revoke", {**FORM_HEADERS, "Authorization": self.authorization}, body
        )


@dataclass(slots=True)
class DashboardRevokeQueue(PooledRevocations):
    """Revokes dashboard access tokens as the public client ``dashboard`` (RFC 7009 with ``client_id`` and no secret).

    With no secret, the presented token is what proves the caller holds it, so the server verifies its signature and
    claims (a project client revoking its own token, ``RevokeQueue``, skips that). The pool comes from rotating the
    virtual user's login in setup (rotation leaves earlier access tokens live); a fresh token from one more rotation.
    """

    refresh_token: str = ""

    async def fresh(self, connection: Connection) -> str:
        """Rotate the login once and keep its access token."""
        fields = {"grant_type": "refresh_token", "client_id": DASHBOARD_CLIENT_ID, "refresh_token": self.refresh_token}
        status, body = await connection.request(
            build_request(self.target, "POST", "/oauth2/token", FORM_HEADERS, form(fields))
        )
        answer = (json_object(body) or {}) if status == 200 else {}
        access, refresh = answer.get("access_token"), answer.get("refresh_token")
        if not isinstance(access, str) or not isinstance(refresh, str):
            raise SessionStepError("rotating the login for a token to revoke: " + describe_http_error(status, body))
        self.refresh_token = refresh
        return access

    def next_request(self) -> bytes:
        """``POST /oauth2/revoke`` for the current token, as the public client ``dashboard``."""
        body = form({"token": self.current, "token_type_hint": "access_token", "client_id": DASHBOARD_CLIENT_ID})
        return build_request(self.target, "POST", "/oauth2/revoke", FORM_HEADERS, body)


@dataclass(slots=True)
class LogoutQueue(PooledRevocations):
    """Logs out: revokes a fresh login's refresh token as the public client ``dashboard`` (RFC 7009), which revokes
    the login's whole family, its access tokens included. A fresh login is a password grant (argon2id)."""

    email: str = ""
    password: str = ""

    async def fresh(self, connection: Connection) -> str:
        """Log in once and keep the refresh token."""
        return await _password_refresh_token(
            connection, self.target, email=self.email, password=self.password, what="logging in for a session to end"
        )

    def next_request(self) -> bytes:
        """``POST /oauth2/revoke`` of the current refresh token, as the public client ``dashboard``."""
        body = form({"token": self.current, "token_type_hint": "refresh_token", "client_id": DASHBOARD_CLIENT_ID})
        return build_request(self.target, "POST", "/oauth2/revoke", FORM_HEADERS, body)

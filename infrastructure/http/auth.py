"""Bearer authentication of the management API (RFC 6750) producing the request's Principal."""

from typing import Any
from uuid import UUID

import anyio
from litestar import Request
from litestar.datastructures import State
from litestar.di import Provide

from application.authz import Authorization, Principal, authorize_on
from domain.errors import NotFound
from domain.ids import DASHBOARD_CLIENT_ID
from domain.project import Project
from infrastructure.crypto.jwt import InvalidToken, JwtValidator, UnknownKey
from infrastructure.http.errors import BearerError


def _principal(claims: dict[str, Any]) -> Principal:
    try:
        client_id = str(claims["client_id"])
        is_user = client_id == DASHBOARD_CLIENT_ID
        return Principal(client_id=client_id, user_id=UUID(claims["sub"]) if is_user else None,
                         project_id=UUID(claims["project_id"]) if "project_id" in claims else None,
                         scopes=frozenset(str(claims.get("scope", "")).split()), token_id=UUID(claims["jti"]))
    except (KeyError, ValueError, TypeError, AttributeError):
        raise BearerError(401, "invalid_token", "the access token is malformed") from None


def _bearer_token(request: Request[Any, Any, Any]) -> str:
    """The presented bearer token. A request with no bearer credentials at all (no header, another scheme) gets a
    challenge without an error code, as RFC 6750 section 3.1 asks; an empty Bearer header, or two Authorization
    headers (which one would a proxy have checked?), is a malformed request."""
    headers = request.headers.getall("authorization", [])
    if len(headers) > 1:
        raise BearerError(400, "invalid_request", "send one Authorization header")
    header = headers[0] if headers else None
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer":
        raise BearerError(401, "", "a bearer access token is required")
    if not token.strip():
        raise BearerError(400, "invalid_request", "the bearer access token is empty")
    return token.strip()


async def principal(request: Request[Any, Any, Any], state: State) -> Principal:
    """Dependency: validates the bearer token strictly and returns who is calling.

    Runs on the event loop: the signature check is CPU only (and remembered per token), and the revocation check
    (with, on a project's path, that project's version, and the key ring's version, see
    ``infrastructure.http.gate``) is one asynchronous query. Only a key-ring change costs a reload in a thread.
    """
    token = _bearer_token(request)
    validator = state.container.validator
    try:
        claims, checked_at = await _peek(validator, token)
        caller = _principal(claims)
        project_id = request.path_params.get("project_id")
        answer = await state.gate.check(caller.token_id, project_id if isinstance(project_id, UUID) else None)
        if answer.ring_version != checked_at:
            # The ring moved after (or before) the snapshot the token was checked against: check it again against a
            # snapshot at least as new as the gate's read (a key revoked meanwhile must not let it through).
            if not validator.keys.observe(answer.ring_version):
                await anyio.to_thread.run_sync(validator.keys.reload)
            caller = _principal(validator.peek(token)[0])
    except InvalidToken:
        raise BearerError(401, "invalid_token", "the access token is invalid") from None
    # Every request checks revocation: a revocation is listed in the same transaction as its event.
    if answer.revoked:
        raise BearerError(401, "invalid_token", "the access token is invalid")
    request.state.project_version = answer.stream_version
    return caller


async def _peek(validator: JwtValidator, token: str) -> tuple[dict[str, Any], int]:
    """The token's claims against this process's key snapshot, and that snapshot's ring version; a kid it does not
    know yet (pre-published by another process) costs one key-ring check in a thread."""
    try:
        return validator.peek(token)
    except UnknownKey:
        await anyio.to_thread.run_sync(validator.keys.refresh)
        return validator.peek(token)


async def authorized(request: Request[Any, Any, Any], state: State, caller: Principal, project_id: UUID,
                     permission: str) -> Authorization:
    """Authorizes ``caller`` on the project at the version the gate saw (a private copy, loaded once per version).

    Raises:
        NotFound: no such project, or the caller may not see it.
        Forbidden: the caller sees the project but lacks ``permission``.
    """
    version = request.state.get("project_version")
    if version is None:
        raise NotFound("project")
    project = state.snapshots.get(project_id, version)
    if project is None:
        app = state.container.app
        project = await anyio.to_thread.run_sync(lambda: app.find(project_id, Project))
        if project is None:
            raise NotFound("project")
        state.snapshots.put(project)
    return authorize_on(project, caller, permission)


AUTH = {"caller": Provide(principal)}

"""Bearer authentication of the management API (RFC 6750) producing the request's Principal."""

from typing import Any
from uuid import UUID

from litestar import Request
from litestar.datastructures import State
from litestar.di import Provide

from application.authz import Principal
from domain.ids import DASHBOARD_CLIENT_ID
from infrastructure.crypto.jwt import InvalidToken
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


def principal(request: Request[Any, Any, Any], state: State) -> Principal:
    """Dependency: validates the bearer token strictly and returns who is calling."""
    header = request.headers.get("authorization")
    if not header:
        raise BearerError(401, "invalid_request", "a bearer access token is required")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise BearerError(401, "invalid_request", "a bearer access token is required")
    try:
        claims = state.container.validator.validate(token.strip())
    except InvalidToken:
        raise BearerError(401, "invalid_token", "the access token is invalid") from None
    caller = _principal(claims)
    # Every request checks revocation: revocations are acknowledged only once this model has applied them.
    if state.container.lookup.is_revoked(caller.token_id):
        raise BearerError(401, "invalid_token", "the access token is invalid")
    return caller


AUTH = {"caller": Provide(principal, sync_to_thread=True)}

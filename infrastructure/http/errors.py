"""Error bodies: RFC 6749 section 5.2 on OAuth endpoints, RFC 9457 problem details on the management API.

Messages never echo a presented secret or token. Unexpected exceptions are logged by type and answered with a
generic problem, so nothing internal leaks.
"""

import logging
import traceback
from typing import Any

import psycopg
from eventsourcing import persistence
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from psycopg_pool import PoolTimeout

from application.oauth.errors import OAuthError, TooManyAttempts
from domain.errors import Conflict, DomainError, Forbidden, InvariantViolated, NotFound
from infrastructure.postgres import StoreUnavailable

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           409: "Conflict", 413: "Content Too Large", 415: "Unsupported Media Type", 422: "Unprocessable Content",
           429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}


class BearerError(Exception):
    """An RFC 6750 section 3.1 error on a protected resource, answered with a ``WWW-Authenticate`` challenge."""

    def __init__(self, status_code: int, error: str, description: str, scope: str | None = None) -> None:
        super().__init__(description)
        self.status_code = status_code
        self.error = error
        self.description = description
        self.scope = scope


def problem(status: int, detail: str, headers: dict[str, str] | None = None, **extra: Any) -> Response[Any]:
    """Returns an RFC 9457 problem details response."""
    body = {"type": "about:blank", "title": _TITLES.get(status, "Error"), "status": status, "detail": detail, **extra}
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers or {})


def oauth_error_handler(request: Request[Any, Any, Any], exc: OAuthError) -> Response[Any]:
    """RFC 6749 section 5.2 body, ``no-store``, a Basic challenge on every 401, and
    ``Retry-After`` (seconds) on a 429 for too many failed attempts. Outside ``/oauth2`` (the attempt limiter
    unavailable to a sign-up, say) the same error is an RFC 9457 problem, as everything there."""
    extra = {"Retry-After": str(exc.retry_after)} if isinstance(exc, TooManyAttempts) else None
    if not request.url.path.startswith("/oauth2/"):
        headers = {**NO_STORE, **(extra or {})}
        if exc.status_code == 503:
            headers.setdefault("Retry-After", "1")
        return problem(exc.status_code, exc.description, headers=headers)
    return oauth_response(request, exc.error, exc.description, exc.status_code, extra)


def oauth_response(request: Request[Any, Any, Any], error: str, description: str, status: int,
                   extra_headers: dict[str, str] | None = None) -> Response[Any]:
    """Builds an RFC 6749 section 5.2 error response."""
    headers = {**NO_STORE, **(extra_headers or {})}
    if status == 401:
        # RFC 9110 section 15.5.2: a 401 carries a challenge, whichever way the client authenticated (RFC 6749
        # section 5.2 requires it for the Authorization header, and gives 401 to say which schemes are taken).
        # Basic is the one HTTP scheme the endpoints take, so a client that tried another one is told so.
        headers["WWW-Authenticate"] = 'Basic realm="keyledger", charset="UTF-8"'
    body = {"error": error}
    if description:
        body["error_description"] = description_text(description)
    return Response(body, status_code=status, media_type=MediaType.JSON, headers=headers)


def bearer_error_handler(_: Request[Any, Any, Any], exc: BearerError) -> Response[Any]:
    """RFC 6750 challenge plus a problem body (no error code in the challenge when none applies: no credentials)."""
    return problem(exc.status_code, exc.description,
                   headers={"WWW-Authenticate": bearer_challenge(exc.error, exc.description, exc.scope)})


def bearer_challenge(error: str, description: str, scope: str | None = None) -> str:
    """An RFC 6750 section 3 ``WWW-Authenticate`` value (quoted strings escaped as RFC 9110 section 5.6.4 says)."""
    challenge = 'Bearer realm="keyledger"'
    if error:
        challenge += f', error="{error}", error_description="{description_text(description)}"'
    if scope:
        challenge += f', scope="{_quoted(scope)}"'
    return challenge


_DESCRIPTION_CHARACTERS = frozenset(chr(c) for c in (0x20, 0x21, *range(0x23, 0x5C), *range(0x5D, 0x7F)))


def description_text(text: str) -> str:
    """``text`` within the character set RFC 6749 section 5.2 and RFC 6750 section 3 allow an ``error_description``
    (printable ASCII except ``"`` and ``\\``): a message that echoes what the client sent (an unknown scope, say) may
    hold a tab, a quote or a non-ASCII letter, which strict clients may refuse; each becomes ``?``."""
    if all(c in _DESCRIPTION_CHARACTERS for c in text):
        return text
    return "".join(c if c in _DESCRIPTION_CHARACTERS else "?" for c in text)


def _quoted(text: str) -> str:
    """``text`` for the inside of a quoted-string."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def domain_error_handler(_: Request[Any, Any, Any], exc: DomainError) -> Response[Any]:
    """Maps domain refusals to problem details."""
    if isinstance(exc, NotFound):
        return problem(404, "not found")
    if isinstance(exc, Forbidden):
        # RFC 6750 section 3.1: the token does not carry the privileges the request needs.
        return problem(403, str(exc), headers={"WWW-Authenticate": bearer_challenge("insufficient_scope", str(exc))})
    if isinstance(exc, Conflict | InvariantViolated):
        return problem(409, str(exc))
    return problem(400, str(exc))


def http_error_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """Litestar's own 4xx (validation, size, routing) as problem details, or OAuth errors on /oauth2."""
    if request.url.path.startswith("/oauth2/"):
        if exc.status_code >= 500:
            return oauth_response(request, "server_error", "", 500)
        return oauth_response(request, "invalid_request", exc.detail, exc.status_code)
    if isinstance(exc, ValidationException):
        errors = [{"key": e.get("key"), "message": e.get("message")} for e in (exc.extra or []) if isinstance(e, dict)]
        return problem(400, "the request is invalid", errors=errors)
    return problem(exc.status_code, exc.detail if exc.status_code < 500 else "internal error")


def timeout_handler(request: Request[Any, Any, Any], exc: TimeoutError) -> Response[Any]:
    """A read model or the group commit did not answer in time: 503, retryable, never a 500."""
    logger.warning("timeout on %s %s", request.method, request.url.path)
    if request.url.path.startswith("/oauth2/"):
        return oauth_response(request, "temporarily_unavailable", "try again shortly", 503)
    return problem(503, "the service is catching up; try again shortly", headers={"Retry-After": "1"})


def internal_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Logs the exception type (never its arguments, which may hold input) and answers a generic 500."""
    logger.error("unhandled %s on %s %s\n%s", type(exc).__name__, request.method, request.url.path,
                 "".join(traceback.format_tb(exc.__traceback__)))
    if request.url.path.startswith("/oauth2/"):
        return Response({"error": "server_error"}, status_code=500, headers=NO_STORE)
    return problem(500, "internal error")


def unavailable_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """PostgreSQL is unreachable or its connections are exhausted: 503, retryable, never a 500."""
    logger.warning("database unavailable (%s) on %s %s", type(exc).__name__, request.method, request.url.path)
    if request.url.path.startswith("/oauth2/"):
        return oauth_response(request, "temporarily_unavailable", "try again shortly", 503)
    return problem(503, "the service is temporarily unavailable; try again shortly", headers={"Retry-After": "1"})


EXCEPTION_HANDLERS: dict[Any, Any] = {
    OAuthError: oauth_error_handler,
    BearerError: bearer_error_handler,
    DomainError: domain_error_handler,
    HTTPException: http_error_handler,
    TimeoutError: timeout_handler,
    psycopg.OperationalError: unavailable_handler,
    PoolTimeout: unavailable_handler,
    # eventsourcing's datastore re-raises psycopg's errors as its own classes, which are not psycopg's subclasses:
    # an unreachable server, a connection lost, or a pool with no connection to hand out.
    persistence.OperationalError: unavailable_handler,
    persistence.InterfaceError: unavailable_handler,
    StoreUnavailable: unavailable_handler,
    Exception: internal_error_handler,
}

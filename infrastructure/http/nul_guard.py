"""Refuses NUL characters anywhere in a request, before any handler sees them.

PostgreSQL's ``text`` and ``jsonb`` refuse the NUL character. A NUL that reached an event (a client's or project's
name, a webhook URL, a refused request's details) would be stored in the event store, which accepts any bytes, and
then fail every read model that copies it, on every pass, for every tenant: one request could stop the projections
for good (a rebuild would meet the same event). No legitimate name, URL, form field or JSON string needs it.
"""

from typing import Any

from litestar import Request, Response

from infrastructure.http.errors import oauth_response, problem


def has_nul(data: bytes) -> bool:
    """Whether ``data`` holds a NUL: raw, JSON-escaped or percent-encoded (three scans in C, no generator: this runs
    on every request, several times)."""
    return b"\x00" in data or b"\\u0000" in data or b"%00" in data


async def refuse_nul(request: Request[Any, Any, Any]) -> Response[Any] | None:
    """``before_request`` hook: 400 (RFC 6749 ``invalid_request`` on /oauth2, RFC 9457 elsewhere) for a NUL in the
    path, the query or the body (raw, JSON-escaped or percent-encoded)."""
    scope = request.scope
    found = has_nul(scope.get("raw_path") or b"") or has_nul(scope.get("query_string") or b"")
    if not found and request.method in ("POST", "PUT", "PATCH"):
        found = has_nul(await request.body())
    if not found:
        return None
    if request.url.path.startswith("/oauth2/"):
        return oauth_response(request, "invalid_request", "the request contains a NUL character", 400)
    return problem(400, "the request contains a NUL character")

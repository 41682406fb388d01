"""Refuses a query parameter given more than once where the endpoint takes one value.

Litestar keeps the last of a scalar parameter's repeated values: ``?status=active&status=revoked`` listed revoked
tokens only, and said nothing. A caller who repeats a filter means something the endpoint does not do (any of
several values, or all of them); it gets a 400 naming the parameter instead of an answer to another question.
Parameters declared as lists (the audit ledger's ``type``) repeat as before; names no endpoint reads are ignored,
as unknown parameters are.
"""

from collections import Counter
from typing import Any

from litestar import Request, Response
from litestar.constants import RESERVED_KWARGS

from infrastructure.http.errors import oauth_response, problem

_SCALARS: dict[int, frozenset[str]] = {}  # per route handler: the query names that take one value


def scalar_query_names(handler: Any) -> frozenset[str]:
    """The query parameters ``handler`` reads one value of (by the name the query uses), worked out once."""
    names = _SCALARS.get(id(handler))
    if names is None:
        dependencies = set(handler.resolve_dependencies())
        names = _SCALARS[id(handler)] = frozenset(
            getattr(field.kwarg_definition, "query", None) or name
            for name, field in handler.parsed_fn_signature.parameters.items()
            if name not in RESERVED_KWARGS and name not in dependencies and not field.is_non_string_sequence)
    return names


def repeated_scalar(request: Request[Any, Any, Any]) -> str | None:
    """The first query parameter the endpoint takes once but the request repeats, or None (no query: no work)."""
    query = request.scope.get("query_string") or b""
    if b"&" not in query:
        return None
    counts = Counter(name for name, _ in request.query_params.multi_items())
    repeated = [name for name, count in counts.items() if count > 1 and name not in request.path_params]
    if not repeated:
        return None
    scalars = scalar_query_names(request.route_handler)
    return next((name for name in repeated if name in scalars), None)


def refuse_repeated_query(request: Request[Any, Any, Any]) -> Response[Any] | None:
    """``before_request`` part: 400 (RFC 6749 ``invalid_request`` on /oauth2, RFC 9457 elsewhere) for a repeated
    scalar query parameter."""
    name = repeated_scalar(request)
    if name is None:
        return None
    text = f"the query parameter {name!r} may be given only once"
    if request.url.path.startswith("/oauth2/"):
        return oauth_response(request, "invalid_request", text, 400)
    return problem(400, text)

"""Refuses NUL characters anywhere in a request, and bodies that are not UTF-8, before any handler sees them.

PostgreSQL's ``text`` and ``jsonb`` refuse the NUL character. A NUL that reached an event (a client's or project's
name, a webhook URL, a refused request's details) would be stored in the event store, which accepts any bytes, and
then fail every read model that copies it, on every pass, for every tenant: one request could stop the projections
for good (a rebuild would meet the same event). No legitimate name, URL, form field or JSON string needs it.

Every body must be UTF-8: JSON exchanged between systems is (RFC 8259 section 8.1), and a form's bytes are
percent-encoded ASCII. msgspec, which decodes Litestar's JSON bodies whatever the Content-Type says, raises
``UnicodeDecodeError`` for a string holding bytes that are not UTF-8, and Litestar only turns its ``DecodeError``
into a 400: without this check such a body was a 500.

A JSON string may not hold half of a UTF-16 surrogate pair either (RFC 8259 section 8.2: such a string cannot become
Unicode text). msgspec refuses it, but for a high surrogate escape not followed by its low half it says "Input data was
truncated", which sends the caller looking for a cut-off body; the management API says what is wrong instead.
"""

import re
from typing import Any

from litestar import Request, Response

from infrastructure.http.errors import oauth_response, problem


def has_nul(data: bytes) -> bool:
    """Whether ``data`` holds a NUL: raw, JSON-escaped or percent-encoded (three scans in C, no generator: this runs
    on every request, several times)."""
    return b"\x00" in data or b"\\u0000" in data or b"%00" in data


def is_utf8(data: bytes) -> bool:
    """Whether ``data`` is valid UTF-8 (ASCII, the common case, is checked without decoding)."""
    if data.isascii():
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# An escape of half a surrogate pair without its other half: a high one (D800 to DBFF) not followed by a low one
# (DC00 to DFFF), or a low one not preceded by a high one. Its backslash must not be escaped itself: it follows an
# even run of backslashes, or none (the JSON text ``"\\uD800"`` is the six characters ``\uD800``, not an escape).
_UNPAIRED_SURROGATE = re.compile(
    rb"(?<!\\)(?:\\\\)*(?:\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2})")


def has_unpaired_surrogate(json_text: bytes) -> bool:
    """Whether a JSON text holds an escaped surrogate that is not part of a high-low pair (one C scan when it holds
    no ``\\u`` escape at all, the common case)."""
    return b"\\u" in json_text and _UNPAIRED_SURROGATE.search(json_text) is not None


async def refuse_nul(request: Request[Any, Any, Any]) -> Response[Any] | None:
    """``before_request`` hook: 400 (RFC 6749 ``invalid_request`` on /oauth2, RFC 9457 elsewhere) for a NUL in the
    path, the query or the body (raw, JSON-escaped or percent-encoded), for a body that is not UTF-8, or for a
    management API (JSON) body with an unpaired surrogate escape."""
    scope = request.scope
    problem_text = None
    if has_nul(scope.get("raw_path") or b"") or has_nul(scope.get("query_string") or b""):
        problem_text = "the request contains a NUL character"
    elif request.method in ("POST", "PUT", "PATCH"):
        body = await request.body()
        if has_nul(body):
            problem_text = "the request contains a NUL character"
        elif not is_utf8(body):
            problem_text = "the request body is not valid UTF-8"
        elif has_unpaired_surrogate(body) and not scope["path"].startswith("/oauth2/"):  # JSON bodies only
            problem_text = "the request body holds a \\u escape of half a UTF-16 surrogate pair without the other half"
    if problem_text is None:
        return None
    if request.url.path.startswith("/oauth2/"):
        return oauth_response(request, "invalid_request", problem_text, 400)
    return problem(400, problem_text)

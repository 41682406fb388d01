"""An ASGI lane in front of Litestar for the one request that must be answered fastest: RFC 7009 revocation by a
known client of one of its own client_credentials tokens, or by the dashboard of one of its access tokens
(``infrastructure.http.fast_revocation``).

Routing, the middleware stack, the signature model and the response machinery cost a Litestar request more CPU than
that whole revocation does once it is batched. The lane answers such a request itself when it is plainly in order:
``POST /oauth2/revoke`` with no query, a form body within the size limit and free of NUL, strictly parsed (no
repeated parameter), one client authentication method, and a client and token the fast path accepts. Anything else,
including every request that will be refused, is handed to Litestar unchanged (the body it read is replayed), where
the general path answers with the usual validation, counting and error bodies. The lane's answer is the endpoint's:
200, an empty body, ``Cache-Control: no-store``; or, when the group commit did not answer in time (a database that
stopped answering), RFC 6749's ``temporarily_unavailable`` with 503 at once, as the endpoint would answer after
waiting as long again: the revocation may still be recorded, and repeating it is harmless (RFC 7009 2.2).
"""

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from application.oauth.errors import OAuthError
from infrastructure.batching import CommitTimeout
from infrastructure.http.fast_revocation import revoke_known
from infrastructure.http.forms import client_authentication, parse_form
from infrastructure.http.nul_guard import has_nul

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

logger = logging.getLogger(__name__)

PATH = "/oauth2/revoke"
TRIED = "keyledger.fast_revocation_tried"  # set in the scope once the lane has tried the fast path
REVOCATION_MEDIA_TYPE = "text/plain"  # the endpoint's empty answer: text may be empty, JSON may not
_ANSWER_HEADERS = [(b"cache-control", b"no-store"), (b"pragma", b"no-cache"),
                   (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"0")]  # as Litestar types it
_UNAVAILABLE = b'{"error":"temporarily_unavailable","error_description":"try again shortly"}'
_UNAVAILABLE_HEADERS = [(b"cache-control", b"no-store"), (b"pragma", b"no-cache"), (b"retry-after", b"1"),
                        (b"content-type", b"application/json"), (b"content-length", str(len(_UNAVAILABLE)).encode())]


class RevocationLane:
    """ASGI wrapper of the Litestar app (see the module docstring)."""

    def __init__(self, app: Any, max_body_bytes: int) -> None:
        self.app = app
        self._max_body = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != PATH or scope.get("query_string"):
            await self.app(scope, receive, send)
            return
        body, complete = await self._read(scope, receive)
        scope[TRIED] = complete  # the endpoint need not try the fast path again
        try:
            answered = complete and await self._answered(scope, body)
        except CommitTimeout:
            logger.warning("revocation lane: the group commit did not answer in time; answered 503")
            await send({"type": "http.response.start", "status": 503, "headers": _UNAVAILABLE_HEADERS})
            await send({"type": "http.response.body", "body": _UNAVAILABLE})
            return
        if answered:
            await send({"type": "http.response.start", "status": 200, "headers": _ANSWER_HEADERS})
            await send({"type": "http.response.body", "body": b""})
            return
        await self.app(scope, _replay(body, complete, receive), send)

    async def _read(self, scope: Scope, receive: Receive) -> tuple[bytes, bool]:
        """The body, if it arrives whole within the limit (complete=False: what was read, to be replayed)."""
        length = _header(scope, b"content-length")
        if length is None or not (length.isascii() and length.isdigit()) or int(length) > self._max_body:
            return b"", False  # chunked, malformed or too large: Litestar reads (and limits) it
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks), False
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            if size > self._max_body:
                return b"".join(chunks), False
            if not message.get("more_body", False):
                return b"".join(chunks), True

    async def _answered(self, scope: Scope, body: bytes) -> bool:
        """Whether the fast path revoked (or found nothing to revoke) for this request. Any other failure hands the
        request to Litestar, whose general path answers it (a 503 for an unavailable database) and whose error
        handlers log it: a failed fast attempt has changed nothing. A ``CommitTimeout`` (the group commit did not
        answer in time; the revocation may still be recorded) is raised: the caller answers 503."""
        state = self.app.state
        fast = state.get("fast_introspection")
        if fast is None or has_nul(scope.get("raw_path") or b"") or has_nul(body):
            return False
        if sum(1 for key, _ in scope["headers"] if key == b"authorization") > 1:
            return False  # ambiguous: the general path refuses it (``oauth.single_header``)
        try:
            params = parse_form(_header(scope, b"content-type") or "", body)
            credentials = client_authentication(_header(scope, b"authorization"), params)
            source = scope["client"][0] if scope.get("client") else None
            return await revoke_known(fast, state.container, credentials, params.get("token"), source)
        except OAuthError:
            return False  # refused: the general path answers with its error body
        except CommitTimeout:
            raise
        except Exception as exc:  # handed on, never swallowed: the general path meets it again
            logger.debug("revocation lane: %s, handed to the general path", type(exc).__name__)
            return False


def _header(scope: Scope, name: bytes) -> str | None:
    """The value of the request header ``name`` (lower case) if it appears exactly once."""
    values = [value for key, value in scope["headers"] if key == name]
    return values[0].decode("latin-1") if len(values) == 1 else None


def _replay(body: bytes, complete: bool, receive: Receive) -> Receive:
    """A receive that hands out the body already read, then (if it was not all) the rest from ``receive``."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": not complete}
        return await receive()

    return replayed

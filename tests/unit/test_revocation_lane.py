"""The revocation lane's ASGI plumbing: it answers only what the fast path revoked, and hands every other request
to the app behind it with the body intact (read in chunks or not at all)."""

import asyncio
import base64
import json
from typing import Any

import pytest

from infrastructure.batching import CommitTimeout
from infrastructure.http import revocation_lane
from infrastructure.http.fast_revocation import _unverified_claims
from infrastructure.http.revocation_lane import RevocationLane


class State(dict):
    container = object()


class Inner:
    """The app behind the lane: records what reached it."""

    def __init__(self, fast: object | None = object()) -> None:
        self.state = State(fast_introspection=fast) if fast is not None else State()
        self.calls: list[tuple[str, bytes]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.calls.append((scope["path"], body))
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b"inner"})


BASIC = b"Basic " + base64.b64encode(b"client-1:secret-1")


def scope(path: str = "/oauth2/revoke", *, query: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None,
          body: bytes = b"token=abc") -> dict[str, Any]:
    default = [(b"content-type", b"application/x-www-form-urlencoded"), (b"authorization", BASIC),
               (b"content-length", str(len(body)).encode())]
    return {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "query_string": query,
            "headers": default if headers is None else headers, "client": ("203.0.113.9", 5000)}


def run(lane: RevocationLane, request: dict[str, Any], chunks: list[bytes]) -> list[dict[str, Any]]:
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(lane(request, receive, send))
    return sent


@pytest.fixture
def decided(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    seen: list[tuple[Any, ...]] = []

    async def fake(fast: object, container: object, credentials: tuple[str, str], token: str, source: str) -> bool:
        seen.append((credentials, token, source))
        return token == "abc"

    monkeypatch.setattr(revocation_lane, "revoke_known", fake)
    return seen


def test_a_revocation_the_fast_path_took_is_answered_by_the_lane(decided: list[tuple[Any, ...]]) -> None:
    inner = Inner()
    sent = run(RevocationLane(inner, max_body_bytes=1024), scope(body=b"token=abc&token_type_hint=access_token"),
               [b"token=abc", b"&token_type_hint=access_token"])
    assert decided == [(("client-1", "secret-1"), "abc", "203.0.113.9")]
    assert inner.calls == []
    assert sent[0]["status"] == 200 and (b"cache-control", b"no-store") in sent[0]["headers"]
    assert sent[1]["body"] == b""


@pytest.mark.parametrize(("request_scope", "chunks"), [
    (scope(body=b"token=other"), [b"token=", b"other"]),  # the fast path declined
    (scope(body=b"token=abc&token=abc"), [b"token=abc&token=abc"]),  # repeated parameter: invalid_request
    (scope(body=b"token=abc%00"), [b"token=abc%00"]),  # NUL
    (scope(query=b"token=abc"), [b"token=abc"]),  # a query string
    (scope(body=b"token=abc&client_secret=x"), [b"token=abc&client_secret=x"]),  # two authentication methods
    (scope(headers=[(b"content-type", b"application/json"), (b"authorization", BASIC),
                    (b"content-length", b"9")]), [b"token=abc"]),  # not a form
    (scope(headers=[(b"content-type", b"application/x-www-form-urlencoded"), (b"authorization", BASIC)]),
     [b"token=", b"abc"]),  # no content-length (chunked): not read by the lane at all
    (scope(body=b"token=abc" + b"x" * 2000), [b"token=abc", b"x" * 2000]),  # over the size limit
    (scope(path="/oauth2/token"), [b"token=abc"]),
])
def test_everything_else_reaches_the_app_with_its_body(decided: list[tuple[Any, ...]],
                                                       request_scope: dict[str, Any], chunks: list[bytes]) -> None:
    inner = Inner()
    sent = run(RevocationLane(inner, max_body_bytes=1024), request_scope, chunks)
    assert inner.calls == [(request_scope["path"], b"".join(chunks))]
    assert sent[0]["status"] == 299


def test_before_startup_everything_reaches_the_app(decided: list[tuple[Any, ...]]) -> None:
    inner = Inner(fast=None)
    run(RevocationLane(inner, max_body_bytes=1024), scope(), [b"token=abc"])
    assert decided == [] and inner.calls == [("/oauth2/revoke", b"token=abc")]


def run_failing(monkeypatch: pytest.MonkeyPatch, error: Exception) -> tuple[Inner, list[dict[str, Any]]]:
    """A revocation through the lane whose fast path raises ``error``: the app behind it, and what was sent."""
    async def failing(*_: object) -> bool:
        raise error

    monkeypatch.setattr(revocation_lane, "revoke_known", failing)
    inner = Inner()
    return inner, run(RevocationLane(inner, max_body_bytes=1024), scope(), [b"token=abc"])


def test_a_failing_fast_path_hands_the_request_on(monkeypatch: pytest.MonkeyPatch) -> None:
    inner, sent = run_failing(monkeypatch, RuntimeError("database unavailable"))
    assert inner.calls == [("/oauth2/revoke", b"token=abc")] and sent[0]["status"] == 299


def test_a_group_commit_that_does_not_answer_in_time_is_a_503_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Handed on, the request would wait as long again in the general path, for the same 503."""
    inner, sent = run_failing(monkeypatch, CommitTimeout("the group commit did not answer in time"))
    assert inner.calls == [] and sent[0]["status"] == 503
    assert (b"cache-control", b"no-store") in sent[0]["headers"] and (b"retry-after", b"1") in sent[0]["headers"]
    assert json.loads(sent[1]["body"]) == {"error": "temporarily_unavailable", "error_description": "try again shortly"}
    assert dict(sent[0]["headers"])[b"content-length"] == str(len(sent[1]["body"])).encode()


def test_repeated_authorization_headers_are_left_to_the_app(decided: list[tuple[Any, ...]]) -> None:
    inner = Inner()
    headers = [(b"content-type", b"application/x-www-form-urlencoded"), (b"authorization", BASIC),
               (b"authorization", BASIC), (b"content-length", b"9")]
    run(RevocationLane(inner, max_body_bytes=1024), scope(headers=headers), [b"token=abc"])
    assert decided == [] and len(inner.calls) == 1


def test_the_endpoint_is_told_the_fast_path_was_tried(decided: list[tuple[Any, ...]]) -> None:
    request = scope(body=b"token=other")
    run(RevocationLane(Inner(), max_body_bytes=1024), request, [b"token=other"])
    assert request[revocation_lane.TRIED] is True and len(decided) == 1


@pytest.mark.parametrize("payload", [b"[" * 5000, b"not json", b"[1, 2]", b"\xff\xfe"])
def test_payloads_that_are_not_claims_name_no_stream(payload: bytes) -> None:
    token = "e30." + base64.urlsafe_b64encode(payload).decode().rstrip("=") + ".c2ln"
    assert _unverified_claims(token) is None

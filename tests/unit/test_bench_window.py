"""``benchmarks.runner.run_scenario`` tells when its load ended, so that what the server still does after it (read
models catching up) is timed from there, not from when the load generator's own work after it was done. Driven
against a throwaway HTTP responder on loopback, in a thread of its own (the load generator runs its own loop)."""

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import benchmarks.runner as runner
from benchmarks.httpclient import Target, build_request
from benchmarks.runner import run_scenario
from benchmarks.scenarios import Plan

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


@pytest.fixture
def responder() -> Iterator[Target]:
    """A keep-alive responder answering every request at once, served from its own thread."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    port: list[int] = []
    stop: list[asyncio.Event] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(RESPONSE)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port.append(server.sockets[0].getsockname()[1])
        stop.append(asyncio.Event())
        started.set()
        async with server:
            await stop[0].wait()

    thread = threading.Thread(target=lambda: loop.run_until_complete(serve()), daemon=True)
    thread.start()
    try:
        assert started.wait(5), "the responder did not start"
        yield Target(host="127.0.0.1", port=port[0], host_header=f"127.0.0.1:{port[0]}")
    finally:
        if stop:
            loop.call_soon_threadsafe(stop[0].set)
        thread.join(5)
        if not thread.is_alive():
            loop.close()


def test_what_follows_the_load_is_timed_from_its_end_not_from_the_merged_result(
        responder: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    merge_entered: list[float] = []
    merged: list[float] = []
    merge = runner.merge

    def slow_merge(*args: Any, **kwargs: Any) -> Any:  # the load generator's own work after the load: not counted
        merge_entered.append(time.monotonic())
        time.sleep(0.3)
        merged.append(time.monotonic())
        return merge(*args, **kwargs)

    monkeypatch.setattr(runner, "merge", slow_merge)
    calls: list[tuple[float, float]] = []
    plan = Plan(requests=(build_request(responder, "GET", "/ping"),))
    before = time.monotonic()
    result = run_scenario("window", responder, plan, concurrency=2, processes=1, warmup=0.1, duration=0.3,
                          after_load=lambda load_ended: calls.append((load_ended, time.monotonic())))

    assert result.requests > 0 and result.errors == 0
    assert len(calls) == 1
    load_ended, called_at = calls[0]
    # The load ran its warm-up and its window, and had ended before the results were merged...
    assert before + 0.1 + 0.3 <= load_ended <= merge_entered[0]
    # ...which is what the callback is told, though it is called after the merging (0.3 s later).
    assert called_at >= merged[0]

"""``benchmarks.runner.run_scenario`` tells when its measurement window ended, so that what the server still does
after it (read models catching up) is timed from there, not from when the results were merged. Driven against a
throwaway HTTP responder on loopback, in a thread of its own (the load generator runs its own event loop)."""

import asyncio
import io
import threading
import time
from collections.abc import Iterator

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
    assert started.wait(5)
    yield Target(host="127.0.0.1", port=port[0], host_header=f"127.0.0.1:{port[0]}")
    loop.call_soon_threadsafe(stop[0].set)
    thread.join(5)
    loop.close()


def test_the_window_end_is_reported_before_the_results_are_merged(responder: Target,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    merged_at: list[float] = []
    merge = runner.merge

    def slow_merge(*args, **kwargs):  # merging, the CPU line and a trace take time after the window: not counted
        time.sleep(0.3)
        merged_at.append(time.monotonic())
        return merge(*args, **kwargs)

    monkeypatch.setattr(runner, "merge", slow_merge)
    monkeypatch.setattr("sys.stderr", io.StringIO())
    ended: list[float] = []
    plan = Plan(requests=(build_request(responder, "GET", "/ping"),))
    before = time.monotonic()
    result = run_scenario("window", responder, plan, concurrency=2, processes=1, warmup=0.1, duration=0.3,
                          ended=ended.append)
    returned = time.monotonic()

    assert result.requests > 0 and result.errors == 0
    assert len(ended) == 1
    # The window: warm-up and measurement after the connections opened, so not before ``before`` plus both...
    assert ended[0] >= before + 0.1 + 0.3
    # ...and its end is the window's, not the moment the merged result came back (0.3 s of merging later).
    assert ended[0] <= merged_at[0] - 0.25
    assert ended[0] <= returned - 0.25

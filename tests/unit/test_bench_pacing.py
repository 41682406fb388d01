"""``python -m benchmarks --rate``: virtual users on a fixed schedule (open loop), latency counted from when each
request was due. Driven against a throwaway HTTP responder on loopback, so only the load generator is under test."""

import asyncio
from array import array
from collections.abc import Callable

from benchmarks.httpclient import Target, build_request
from benchmarks.scenarios import Plan
from benchmarks.worker import Job, run_worker

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


async def _responder(delay_first: float) -> tuple[asyncio.Server, list[int]]:
    """A keep-alive responder answering every request at once, but for the very first, held ``delay_first``
    seconds; it counts the requests it answered."""
    answered = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.readuntil(b"\r\n\r\n"):
            if answered[0] == 0 and delay_first:
                await asyncio.sleep(delay_first)
            answered[0] += 1
            writer.write(RESPONSE)
            await writer.drain()

    async def quiet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handle(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(quiet, "127.0.0.1", 0)
    return server, answered


def _run(job_of: Callable[[Target], Job], delay_first: float = 0.0) -> tuple[list[float], int]:
    async def main() -> tuple[list[float], int]:
        server, answered = await _responder(delay_first)
        port = server.sockets[0].getsockname()[1]
        target = Target(host="127.0.0.1", port=port, host_header=f"127.0.0.1:{port}")
        try:
            result = await run_worker(job_of(target))
        finally:
            server.close()
        latencies = array("d")
        latencies.frombytes(result.latencies)
        assert result.errors == 0
        return list(latencies), answered[0]

    return asyncio.run(main())


def _plan(target: Target) -> Plan:
    return Plan(requests=(build_request(target, "GET", "/ping"),))


def _paced(vus: int, rate: float, duration: float) -> Callable[[Target], Job]:
    def job(target: Target) -> Job:
        return Job(target=target, plan=_plan(target), first_vu=0, vus=vus, warmup=0.0, duration=duration,
                   pace=vus / rate, stagger=1.0 / rate)
    return job


def test_paced_users_send_no_more_than_the_schedule_allows() -> None:
    # Closed, these four users would send thousands of requests to an instant responder in half a second.
    latencies, answered = _run(_paced(vus=4, rate=100.0, duration=0.5))
    assert 1 <= len(latencies) <= 100 * 0.5 + 4
    assert answered <= 100 * 0.5 + 4 + 4  # plus at most one request in flight per user when the window closed


def test_a_request_held_back_by_a_slow_one_counts_its_wait_from_when_it_was_due() -> None:
    # One user due every 50 ms; the first answer takes 300 ms, so the next ones go out late. Counted from when they
    # were sent they would look instant; counted from when they were due, they carry the backlog.
    latencies, _ = _run(_paced(vus=1, rate=20.0, duration=0.6), delay_first=0.3)
    assert latencies[0] >= 0.3
    assert latencies[1] >= 0.3 - 0.05 - 0.01 and latencies[2] >= 0.3 - 0.10 - 0.01


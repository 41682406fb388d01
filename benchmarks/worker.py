"""One worker: N virtual users sending a scenario's plan, and what they measured.

Each virtual user owns one keep-alive connection and sends its next request as soon as the previous response
has been read (closed loop), or, with a rate (``Job.pace``), when its schedule says (open loop, as wrk2 does: each
user sends every ``pace`` seconds, the users staggered evenly, and a request's latency counts from when it was due,
so a request held back by a slow earlier one counts its wait instead of hiding it). In a scenario with sessions, a
virtual user first does its session's unmeasured step. After the warm-up, every response completed inside the
measurement window is counted; at the end of the window the virtual users are cancelled and their in-flight
requests are dropped.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from benchmarks.httpclient import Connection, Target
from benchmarks.report import WorkerResult
from benchmarks.scenarios import Plan
from benchmarks.sessions import Session

__all__ = ["Job", "Publish", "run_worker"]

_MAX_SAMPLES = 20  # distinct error descriptions kept per worker
_SAMPLE_CHARS = 200
_ERROR_PAUSE = 0.01  # seconds a virtual user waits after a connection failure, so a dead server is no busy loop
_PUBLISH_INTERVAL = 0.1

Publish = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class Job:
    """The work of one worker: its share of the virtual users (picklable)."""

    target: Target
    plan: Plan
    first_vu: int
    vus: int
    warmup: float
    duration: float
    pace: float = 0.0  # seconds between one virtual user's requests (0: closed loop)
    stagger: float = 0.0  # seconds between consecutive virtual users' first requests (paced runs)


class _Stats:
    """Counters shared by the virtual users of one worker."""

    __slots__ = ("errors", "helpers", "latencies", "recording", "requests", "samples", "starts")

    def __init__(self) -> None:
        self.latencies = array("d")
        self.starts = array("d")  # each latency's request start (``time.perf_counter``), for ``--trace``
        self.requests = 0
        self.errors = 0
        self.helpers = 0
        self.samples: dict[str, int] = {}
        self.recording = False

    def start_recording(self) -> None:
        """Forget the warm-up and start counting."""
        del self.latencies[:]
        del self.starts[:]
        self.requests = self.errors = self.helpers = 0
        self.samples.clear()
        self.recording = True

    def error(self, description: str) -> None:
        """Count one error and keep its (truncated) description if it is one of the first few distinct ones."""
        self.errors += 1
        description = description[:_SAMPLE_CHARS]
        if description in self.samples:
            self.samples[description] += 1
        elif len(self.samples) < _MAX_SAMPLES:
            self.samples[description] = 1


def _judge(plan: Plan, status: int, body: bytes, missing: str) -> str | None:
    """Return why a stateless plan's response is an error, or None if it is a success."""
    if not 200 <= status < 300 or (plan.status is not None and status != plan.status):
        return f"HTTP {status}: {body[:_SAMPLE_CHARS]!r}"
    markers = plan.expect_in_body
    if markers and not all(marker in body for marker in markers):
        return f"HTTP {status} {missing}: {body[:_SAMPLE_CHARS]!r}"
    return plan.check(body) if plan.check is not None else None


class _Schedule:
    """When a paced virtual user's requests are due (open loop)."""

    __slots__ = ("due", "pace")

    def __init__(self, first: float, pace: float) -> None:
        self.due, self.pace = first, pace

    async def wait(self) -> float:
        """Sleeps until the next request is due and returns when it was due (its latency's start). The event loop's
        timers fire up to about a millisecond late, which the latency then includes."""
        due = self.due
        self.due = due + self.pace
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        return due


async def _virtual_user(connection: Connection, plan: Plan, index: int, stats: _Stats,
                        schedule: _Schedule | None = None) -> None:
    """Send the plan's requests round-robin (starting at ``index``) until cancelled (on ``schedule`` if given)."""
    requests = plan.requests
    missing = "missing " + ", ".join(marker.decode("latin-1") for marker in plan.expect_in_body)
    count = len(requests)
    position = index % count
    clock = time.perf_counter
    latencies, starts = stats.latencies, stats.starts
    while True:
        data = requests[position]
        position = position + 1 if position + 1 < count else 0
        started = clock() if schedule is None else await schedule.wait()
        try:
            status, body = await connection.request(data)
        except Exception as exc:  # any failure below HTTP counts as a connection error
            if stats.recording:
                stats.requests += 1
                stats.error(f"connection error: {type(exc).__name__}: {exc}")
            await asyncio.sleep(_ERROR_PAUSE)
            continue
        if stats.recording:
            latencies.append(clock() - started)
            starts.append(started)
            stats.requests += 1
            if (problem := _judge(plan, status, body, missing)) is not None:
                stats.error(problem)


async def _session_user(connection: Connection, session: Session, stats: _Stats,
                        schedule: _Schedule | None = None) -> None:
    """Run one virtual user's session until cancelled: unmeasured ``prepare``, then one measured request (sent when
    ``schedule`` says, if given)."""
    clock = time.perf_counter
    latencies, starts = stats.latencies, stats.starts
    while True:
        try:
            helpers = await session.prepare(connection)
        except Exception as exc:  # the unmeasured step failed: one error, then try again
            if stats.recording:
                stats.requests += 1
                stats.error(f"unmeasured step failed: {type(exc).__name__}: {exc}")
            await asyncio.sleep(_ERROR_PAUSE)
            continue
        if stats.recording:
            stats.helpers += helpers
        data = session.next_request()
        started = clock() if schedule is None else await schedule.wait()
        try:
            status, body = await connection.request(data)
        except Exception as exc:  # any failure below HTTP counts as a connection error
            session.lost()
            if stats.recording:
                stats.requests += 1
                stats.error(f"connection error: {type(exc).__name__}: {exc}")
            await asyncio.sleep(_ERROR_PAUSE)
            continue
        problem = session.outcome(status, body)
        if stats.recording:
            latencies.append(clock() - started)
            starts.append(started)
            stats.requests += 1
            if problem is not None:
                stats.error(problem)


def _user_task(connection: Connection, plan: Plan, index: int, stats: _Stats,
               schedule: _Schedule | None) -> Coroutine[Any, Any, None]:
    """Return the coroutine of virtual user ``index`` (numbered across all processes)."""
    if plan.sessions:
        return _session_user(connection, plan.sessions[index], stats, schedule)
    return _virtual_user(connection, plan, index, stats, schedule)


def _schedule(job: Job, offset: int, start: float) -> _Schedule | None:
    """The schedule of the job's virtual user ``offset`` (None in a closed loop)."""
    if job.pace <= 0:
        return None
    return _Schedule(start + (job.first_vu + offset) * job.stagger, job.pace)


async def _preconnect(connection: Connection) -> None:
    """Open the connection ahead of the run; failures are left for the virtual user to report."""
    try:
        await connection.connect()
    except OSError:
        connection.close()


async def run_worker(
    job: Job, ready: Callable[[], Awaitable[None]] | None = None, publish: Publish | None = None
) -> WorkerResult:
    """Run a worker's virtual users through warm-up and measurement.

    Args:
        job: The worker's share of the work.
        ready: Awaited once the connections are open, just before the load starts (synchronises processes).
        publish: Called about four times a second with the requests and errors counted so far.

    Returns:
        The worker's measurements.
    """
    connections = [Connection(job.target) for _ in range(job.vus)]
    await asyncio.gather(*(_preconnect(connection) for connection in connections))
    if ready is not None:
        await ready()
    stats = _Stats()
    start = time.perf_counter()
    tasks = [
        asyncio.create_task(
            _user_task(connection, job.plan, job.first_vu + offset, stats, _schedule(job, offset, start)))
        for offset, connection in enumerate(connections)
    ]
    try:
        if job.warmup > 0:
            await asyncio.sleep(job.warmup)
        stats.start_recording()
        started = time.perf_counter()
        deadline = started + job.duration
        while (remaining := deadline - time.perf_counter()) > 0:
            await asyncio.sleep(min(remaining, _PUBLISH_INTERVAL))
            if publish is not None:
                publish(stats.requests, stats.errors)
        stats.recording = False
        elapsed = time.perf_counter() - started
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for connection in connections:
            connection.close()
    return WorkerResult(
        stats.latencies.tobytes(), stats.requests, stats.errors, elapsed, dict(stats.samples), stats.helpers,
        stats.starts.tobytes(),
    )

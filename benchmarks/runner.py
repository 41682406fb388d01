"""Run one scenario: split the virtual users across worker processes, show progress, merge the results."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import queue
import sys
import time
from collections.abc import Callable, Coroutine
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event, Semaphore
from pathlib import Path
from typing import Any, TextIO, TypeVar

from benchmarks.cpu import CpuMeter, per_request_line
from benchmarks.httpclient import Target
from benchmarks.report import ScenarioResult, WorkerResult, merge, write_trace
from benchmarks.scenarios import Plan
from benchmarks.worker import Job, run_worker

__all__ = ["Progress", "run_scenario"]

T = TypeVar("T")

_START_TIMEOUT = 60.0  # seconds for worker processes to start and open their connections


class Progress:
    """A single status line on stderr, rewritten in place (``\\r``) about once a second."""

    def __init__(self, scenario: str, warmup: float, duration: float, stream: TextIO = sys.stderr,
                 cpu: CpuMeter | None = None) -> None:
        """Prepare the display; its clock starts with :meth:`start`. With ``cpu``, every tick of the measurement
        window also samples the processes' CPU times, and :meth:`finish` prints them per request."""
        self.scenario, self.warmup, self.duration, self.stream = scenario, warmup, duration, stream
        self.cpu = cpu
        self._measure_from = self._last_time = time.perf_counter()
        self._last_requests = 0
        self._width = 0

    def start(self) -> None:
        """Mark the start of the load: warm-up now, measurement after ``warmup`` seconds."""
        self._measure_from = self._last_time = time.perf_counter() + self.warmup
        self._last_requests = 0

    def tick(self, requests: int, errors: int) -> None:
        """Rewrite the line with elapsed time, requests and errors so far, and the rate since the last tick."""
        now = time.perf_counter()
        elapsed = now - self._measure_from
        if elapsed < 0:
            self._write(f"[{self.scenario}] warming up {self.warmup + elapsed:4.1f}/{self.warmup:g} s")
            return
        if self.cpu is not None and elapsed <= self.duration:
            self.cpu.sample_later(requests)  # off the event loop: reading /proc would hold up the load
        span = now - self._last_time
        rate = (requests - self._last_requests) / span if span > 0 else 0.0
        self._last_time, self._last_requests = now, requests
        self._write(
            f"[{self.scenario}] {min(elapsed, self.duration):5.1f}/{self.duration:g} s  {requests:>9} requests  "
            f"{rate:9.1f} req/s  {errors} errors"
        )

    def finish(self, result: ScenarioResult) -> None:
        """Replace the line with the scenario's totals and end it."""
        self._write(
            f"[{self.scenario}] done: {result.requests} requests in {result.duration_s:.1f} s, "
            f"{result.rps:.1f} req/s, {result.errors} errors",
            end="\n",
        )
        line = None
        if self.cpu is not None:
            self.cpu.settle()
            line = per_request_line(self.scenario, self.cpu.first, self.cpu.last)
        if line is not None:
            self.stream.write(line + "\n")

    def _write(self, text: str, end: str = "") -> None:
        self._width = max(self._width, len(text))
        self.stream.write("\r" + text.ljust(self._width) + end)
        self.stream.flush()


def _run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Runs the load on uvloop when it is installed (it is, with the server's dependencies): the generator shares
    the machine with the server it measures, and uvloop's streams cost it less CPU per request than asyncio's own
    loop, CPU that would otherwise be taken from the server."""
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


async def _run_here(job: Job, progress: Progress) -> WorkerResult:
    """Run the whole job in this process, showing progress from the same event loop."""
    counters = [0, 0]

    def publish(requests: int, errors: int) -> None:
        counters[0], counters[1] = requests, errors

    async def ready() -> None:
        progress.start()

    worker = asyncio.create_task(run_worker(job, ready, publish))
    while not worker.done():
        await asyncio.wait({worker}, timeout=1.0)
        if not worker.done():
            progress.tick(*counters)
    return worker.result()


def _child(
    slot: int, job: Job, counters: Any, ready: Semaphore, go: Event, results: Queue[tuple[int, WorkerResult | str]]
) -> None:
    """Worker process body: run ``job`` once ``go`` is set, publish its counters, put its result.

    Args:
        slot: Index of this worker; its requests and errors are published in ``counters[2 * slot]`` and
            ``counters[2 * slot + 1]`` (a shared ``array('q')``).
        job: The work.
        counters: Shared counters read by the parent for the progress line.
        ready: Released once the connections are open.
        go: Set by the parent when every worker is ready.
        results: Receives ``(slot, WorkerResult)``, or ``(slot, error message)`` on failure.
    """

    def publish(requests: int, errors: int) -> None:
        counters[2 * slot], counters[2 * slot + 1] = requests, errors

    async def wait_for_go() -> None:
        ready.release()
        while not go.is_set():
            await asyncio.sleep(0.002)

    try:
        result: WorkerResult | str = _run_loop(run_worker(job, wait_for_go, publish))
    except Exception as exc:  # reported to the parent, which raises it
        result = f"{type(exc).__name__}: {exc}"
    results.put((slot, result))


def _run_processes(jobs: list[Job], progress: Progress) -> list[WorkerResult]:
    """Run each job in its own process (started together, once all have connected) and collect results.

    Raises:
        RuntimeError: A worker process failed or did not start in time.
    """
    context = mp.get_context("spawn")
    counters = context.Array("q", 2 * len(jobs), lock=False)
    ready, go, results = context.Semaphore(0), context.Event(), context.Queue()
    processes = [
        context.Process(target=_child, args=(slot, job, counters, ready, go, results), daemon=True)
        for slot, job in enumerate(jobs)
    ]
    try:
        for process in processes:
            process.start()
        deadline = time.monotonic() + _START_TIMEOUT
        for _ in processes:
            while not ready.acquire(timeout=0.1):
                if time.monotonic() > deadline or any(process.exitcode is not None for process in processes):
                    raise RuntimeError("worker processes did not start")
        go.set()
        progress.start()
        collected: dict[int, WorkerResult] = {}
        while len(collected) < len(jobs):
            try:
                slot, result = results.get(timeout=1.0)
            except queue.Empty:
                if any(process.exitcode not in {None, 0} for process in processes):
                    raise RuntimeError("a worker process died") from None
                progress.tick(sum(counters[0::2]), sum(counters[1::2]))
                continue
            if isinstance(result, str):
                raise RuntimeError(f"worker process {slot} failed: {result}")
            collected[slot] = result
        return [collected[slot] for slot in range(len(jobs))]
    finally:
        for process in processes:
            process.join(timeout=5.0)
            if process.is_alive():
                process.terminate()


def run_scenario(
    name: str, target: Target, plan: Plan, *, concurrency: int, processes: int, warmup: float, duration: float,
    cpu: bool = False, trace: Path | None = None, rate: float = 0.0, after_load: Callable[[float], None] | None = None,
) -> ScenarioResult:
    """Run one scenario and return its merged result.

    Args:
        name: Scenario name (for display).
        target: The server.
        plan: The scenario's prebuilt requests.
        concurrency: Total number of virtual users (connections).
        processes: Number of OS processes to split the virtual users across (1 runs in this process).
        warmup: Seconds of load before measuring.
        duration: Seconds of measurement.
        cpu: Also print the CPU time per request of the server's processes, PostgreSQL, Redis and the load
            generator (``benchmarks.cpu``; the server must run on this machine).
        trace: Also append every measured response's start and latency to this file (``report.write_trace``).
        rate: Requests a second offered on a fixed schedule, shared evenly by the virtual users (open loop;
            ``benchmarks.worker``); 0 for a closed loop.
        after_load: Called with the ``time.monotonic()`` at which the load ended (every worker stopped, its last
            request answered), once the results are merged and the totals printed, before any trace is written:
            what the server still does after the load, such as read models catching up, is timed from the load's
            end, not from when the load generator's own work after it is done.

    Returns:
        The merged result.

    Raises:
        RuntimeError: The plan has fewer sessions than virtual users, or a worker process failed.
    """
    if plan.sessions and len(plan.sessions) < concurrency:
        raise RuntimeError(f"the plan has {len(plan.sessions)} sessions for {concurrency} virtual users")
    share, extra = divmod(concurrency, processes)
    jobs: list[Job] = []
    for slot in range(processes):
        vus = share + (1 if slot < extra else 0)
        first = sum(job.vus for job in jobs)
        jobs.append(Job(target=target, plan=plan, first_vu=first, vus=vus, warmup=warmup, duration=duration,
                        pace=concurrency / rate if rate > 0 else 0.0, stagger=1.0 / rate if rate > 0 else 0.0))
    progress = Progress(name, warmup, duration, cpu=CpuMeter() if cpu else None)
    parts = [_run_loop(_run_here(jobs[0], progress))] if processes == 1 else _run_processes(jobs, progress)
    load_ended = time.monotonic()
    result = merge(name, concurrency, parts)
    progress.finish(result)
    if after_load is not None:
        after_load(load_ended)
    if trace is not None:
        write_trace(trace, name, parts)
    return result

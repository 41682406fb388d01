"""Results: per-worker raw numbers, their merge into one row per scenario, the Markdown table and JSON."""

from __future__ import annotations

import json
import math
import sys
from array import array
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

__all__ = ["ScenarioResult", "WorkerResult", "markdown_table", "merge", "print_error_samples", "write_json",
           "write_trace"]

TRACE_WINDOW_S = 0.1  # the tail summary of ``write_trace`` counts the windows of this length the slow requests began in

COLUMNS = ("scenario", "concurrency", "duration s", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors")


@dataclass(slots=True)
class WorkerResult:
    """What one worker (process) measured during the measurement window.

    Attributes:
        latencies: ``array('d')`` bytes of the latency, in seconds, of every HTTP response received.
        requests: Requests completed: HTTP responses of any status plus connection failures.
        errors: Non-2xx responses, 2xx responses missing an expected field, and connection failures.
        elapsed: Length of the measurement window in seconds.
        error_samples: Distinct error descriptions (the first few) with their counts.
        helper_requests: Unmeasured requests that sessions sent during the window (e.g. tokens issued because
            a pre-issued pool ran out); they loaded the server but are not in ``requests``.
        starts: ``array('d')`` bytes of each latency's request start (``time.perf_counter``, the same clock in
            every process of the machine), in the order of ``latencies``.
    """

    latencies: bytes
    requests: int
    errors: int
    elapsed: float
    error_samples: dict[str, int] = field(default_factory=dict)
    helper_requests: int = 0
    starts: bytes = b""


@dataclass(slots=True)
class ScenarioResult:
    """One row of the results table (all workers of a scenario merged)."""

    scenario: str
    concurrency: int
    processes: int
    duration_s: float
    requests: int
    errors: int
    rps: float
    p50_ms: float | None
    p90_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    error_samples: dict[str, int] = field(default_factory=dict)
    helper_requests: int = 0


def _percentile(ordered: array[float] | list[float], fraction: float) -> float | None:
    """Return the nearest-rank percentile of an ascending sequence, or None if it is empty."""
    if not ordered:
        return None
    rank = min(max(1, math.ceil(fraction * len(ordered))), len(ordered))
    return ordered[rank - 1]


def _ms(seconds: float | None) -> float | None:
    """Convert seconds to milliseconds, keeping None."""
    return None if seconds is None else seconds * 1000.0


def merge(scenario: str, concurrency: int, parts: list[WorkerResult]) -> ScenarioResult:
    """Merge the results of the workers of one scenario.

    Args:
        scenario: Scenario name.
        concurrency: Total number of virtual users.
        parts: One result per worker process.

    Returns:
        The merged row; req/s uses the longest measurement window among the workers.
    """
    latencies = array("d")
    for part in parts:
        latencies.frombytes(part.latencies)
    ordered = sorted(latencies)
    requests = sum(part.requests for part in parts)
    elapsed = max((part.elapsed for part in parts), default=0.0)
    samples: dict[str, int] = {}
    for part in parts:
        for description, count in part.error_samples.items():
            samples[description] = samples.get(description, 0) + count
    return ScenarioResult(
        scenario=scenario,
        concurrency=concurrency,
        processes=len(parts),
        duration_s=elapsed,
        requests=requests,
        errors=sum(part.errors for part in parts),
        rps=requests / elapsed if elapsed > 0 else 0.0,
        p50_ms=_ms(_percentile(ordered, 0.50)),
        p90_ms=_ms(_percentile(ordered, 0.90)),
        p95_ms=_ms(_percentile(ordered, 0.95)),
        p99_ms=_ms(_percentile(ordered, 0.99)),
        max_ms=_ms(ordered[-1] if ordered else None),
        error_samples=samples,
        helper_requests=sum(part.helper_requests for part in parts),
    )


def _cells(result: ScenarioResult) -> tuple[str, ...]:
    """Format one result as table cells, in :data:`COLUMNS` order."""

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    return (
        result.scenario,
        str(result.concurrency),
        f"{result.duration_s:.1f}",
        str(result.requests),
        f"{result.rps:.1f}",
        ms(result.p50_ms),
        ms(result.p95_ms),
        ms(result.p99_ms),
        str(result.errors),
    )


def markdown_table(results: list[ScenarioResult]) -> str:
    """Return the results as a Markdown table with aligned columns (text left, numbers right)."""
    rows = [_cells(result) for result in results]
    widths = [max(len(cell) for cell in column) for column in zip(COLUMNS, *rows, strict=True)]

    def line(cells: tuple[str, ...]) -> str:
        padded = [
            cell.ljust(width) if index == 0 else cell.rjust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * (width + 1) + ":" if index else "-" * (width + 2) for index, width in enumerate(widths)]
    return "\n".join([line(COLUMNS), "|" + "|".join(rule) + "|", *(line(row) for row in rows)])


def print_error_samples(result: ScenarioResult, stream: TextIO = sys.stderr, limit: int = 5) -> None:
    """Print the first ``limit`` distinct errors of a scenario (already truncated) with their counts.

    Also notes the unmeasured helper requests sent during the measurement, if any.
    """
    if result.helper_requests:
        stream.write(
            f"[{result.scenario}] note: {result.helper_requests} unmeasured helper requests during the measurement "
            "(not counted as requests; they loaded the server)\n"
        )
    if not result.errors:
        stream.flush()
        return
    stream.write(f"[{result.scenario}] {result.errors} errors; first distinct ones:\n")
    for description, count in list(result.error_samples.items())[:limit]:
        stream.write(f"  {count:>8} x {description}\n")
    stream.flush()


def write_json(path: Path, results: list[ScenarioResult], meta: dict[str, Any]) -> None:
    """Write ``{"meta": ..., "results": [...]}`` to ``path``."""
    document = {"meta": meta, "results": [asdict(result) for result in results]}
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def write_trace(path: Path, scenario: str, parts: list[WorkerResult], out: TextIO = sys.stderr) -> None:
    """Append one line per measured response to ``path`` (``scenario``, start in seconds from the scenario's first
    request, latency in ms; tab-separated, in start order) and print where the p99 tail began.

    A tail spread over the whole run is queueing; a tail whose requests began in a few short windows is a stall of
    the whole server (every virtual user waited at once), which is worth chasing on its own.
    """
    pairs: list[tuple[float, float]] = []
    for part in parts:
        latencies, starts = array("d"), array("d")
        latencies.frombytes(part.latencies)
        starts.frombytes(part.starts)
        pairs.extend(zip(starts, latencies, strict=True))
    if not pairs:
        return
    pairs.sort()
    first = pairs[0][0]
    with path.open("a", encoding="utf-8") as trace:
        trace.writelines(f"{scenario}\t{start - first:.6f}\t{latency * 1000.0:.3f}\n" for start, latency in pairs)
    p99 = _percentile(sorted(latency for _, latency in pairs), 0.99) or 0.0  # never None: ``pairs`` is not empty
    tail = [start for start, latency in pairs if latency >= p99]
    windows = {int((start - first) / TRACE_WINDOW_S) for start in tail}
    total = int((pairs[-1][0] - first) / TRACE_WINDOW_S) + 1
    print(f"[{scenario}] p99 tail: {len(tail)} responses of at least {_ms(p99):.1f} ms began in {len(windows)} of "
          f"{total} windows of {TRACE_WINDOW_S * 1000:.0f} ms (trace: {path})", file=out)

"""``python -m benchmarks --trace``: every measured response in start order, and where the p99 tail began."""

import io
from array import array
from pathlib import Path

from benchmarks.report import WorkerResult, write_trace


def part(pairs: list[tuple[float, float]]) -> WorkerResult:
    """A worker's result from (start, latency) pairs in seconds, in the order a worker records them."""
    return WorkerResult(latencies=array("d", [latency for _, latency in pairs]).tobytes(), requests=len(pairs),
                        errors=0, elapsed=10.0, starts=array("d", [start for start, _ in pairs]).tobytes())


def test_the_trace_merges_workers_in_start_order_and_locates_a_stall(tmp_path: Path) -> None:
    # Two processes; 300 quick responses spread over 3 s, and 10 slow ones that all began within 50 ms: a stall.
    quick = [(100.0 + i * 0.01, 0.005) for i in range(300)]
    stalled = [(101.5 + i * 0.005, 0.080) for i in range(10)]
    trace, out = tmp_path / "trace.tsv", io.StringIO()
    write_trace(trace, "revoke", [part(quick[::2] + stalled), part(quick[1::2])], out=out)
    write_trace(trace, "jwks", [part([(5.0, 0.002)])], out=out)

    lines = [line.split("\t") for line in trace.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 311
    revoke = [(float(start), float(latency)) for name, start, latency in lines if name == "revoke"]
    assert revoke[0] == (0.0, 5.0) and [s for s, _ in revoke] == sorted(s for s, _ in revoke)
    assert sum(1 for _, latency in revoke if latency == 80.0) == 10
    assert lines[-1] == ["jwks", "0.000000", "2.000"]
    summary = out.getvalue().splitlines()[0]
    assert summary.startswith("[revoke] p99 tail: 10 responses of at least 80.0 ms began in 1 of 30 windows")

"""The benchmark's CPU-per-request meter, on a fake ``/proc``: which process counts in which group, and the sums."""

import io
import os
import threading
from concurrent import futures
from pathlib import Path

import pytest

from benchmarks.cpu import CpuMeter, group_times, per_request_line, read_procs, speed_line
from benchmarks.report import ScenarioResult
from benchmarks.runner import Progress

TICKS = os.sysconf("SC_CLK_TCK")


def write_proc(root: Path, pid: int, *, ppid: int, comm: str, cmdline: str, ticks: int) -> None:
    folder = root / str(pid)
    folder.mkdir(exist_ok=True)
    # Fields after "(comm)": state, ppid, then nine more, then utime and stime (proc(5)).
    (folder / "stat").write_text(f"{pid} ({comm}) S {ppid} " + "0 " * 9 + f"{ticks} {ticks} 0 0\n")
    (folder / "cmdline").write_bytes(cmdline.replace(" ", "\0").encode() + b"\0")


def fake_proc(root: Path, scale: int, started: int | None = None) -> None:
    """A server (supervisor and two API workers), PostgreSQL, Redis, the load generator with a child, a stranger."""
    spawn = "python -B -c from multiprocessing.spawn import spawn_main"
    table = [(10, 1, "python", ".venv/bin/python .venv/bin/keyledger serve --workers 2", 1),
             (11, 10, "python", spawn, 2), (12, 10, "python", spawn, 3),
             (20, 1, "postgres", "postgres: 15/main: postgres kl 127.0.0.1(5000) idle", 3),
             (21, 10, "postgres", "postgres -D data/pg", 1),  # an embedded server's child counts as PostgreSQL
             (30, 1, "redis-server", "redis-server 127.0.0.1:6379", 5),
             (40, 1, "python", "python -m benchmarks --cpu", 6), (41, 40, "python", spawn, 7),
             (50, 1, "odd) (name", "something else", 8)]
    for pid, ppid, comm, cmdline, ticks in table:
        write_proc(root, pid, ppid=ppid, comm=comm, cmdline=cmdline, ticks=ticks * scale)
    forks = "" if started is None else f"processes {started}\n"
    (root / "stat").write_text(f"cpu  {100 * scale} 0 {100 * scale} 999 7 0 0 0 0 0\ncpu0 1 2 3\n{forks}")
    (root / "self").mkdir(exist_ok=True)  # not a process: skipped


def test_processes_fall_in_their_groups(tmp_path: Path) -> None:
    fake_proc(tmp_path, scale=1)
    procs = read_procs(tmp_path)
    assert {p.comm for p in procs} >= {"odd) (name", "postgres"}
    times = group_times(procs, own_pid=40)
    assert {name: round(seconds * TICKS) for name, seconds in times.items()} == {
        "serve": 2, "api workers": 2 * (2 + 3), "postgres": 8, "redis": 10, "load generator": 2 * (6 + 7)}


def test_the_meter_reports_cpu_per_request_between_its_first_and_last_sample(tmp_path: Path) -> None:
    meter = CpuMeter(tmp_path, own_pid=40)
    fake_proc(tmp_path, scale=1)
    meter.sample(requests=100)
    fake_proc(tmp_path, scale=3)  # every process used twice its first time again
    meter.sample(requests=150)
    fake_proc(tmp_path, scale=5)
    meter.sample(requests=200)
    line = per_request_line("revoke", meter.first, meter.last)
    per_tick = 1e6 / TICKS / 100  # µs per request of one tick over the 100 requests between the samples
    assert line == "[revoke] CPU µs per request (100 requests): " + ", ".join(
        f"{name} {ticks * 4 * per_tick:.0f}" for name, ticks in (
            ("serve", 2), ("api workers", 10), ("postgres", 8), ("redis", 10), ("load generator", 26),
            ("machine", 200)))


def test_processes_started_between_the_samples_are_told(tmp_path: Path) -> None:
    """Processes that came and went during the window (a parallel plan's workers) are in no group: the line says how
    many there were, so a gap between the groups and ``machine`` has a name."""
    meter = CpuMeter(tmp_path, own_pid=40)
    fake_proc(tmp_path, scale=1, started=5_000)
    meter.sample(requests=100)
    fake_proc(tmp_path, scale=2, started=6_400)
    meter.sample(requests=200)
    line = per_request_line("revoke", meter.first, meter.last)
    machine = 200 * 1e6 / TICKS / 100  # its busy ticks grew by 200 over 100 requests
    assert line is not None and line.endswith(f"machine {machine:.0f}; processes or threads started meanwhile: 1,400 "
                                              "(those that exited count in machine alone)")


def test_no_line_without_two_samples_or_requests(tmp_path: Path) -> None:
    meter = CpuMeter(tmp_path, own_pid=40)
    fake_proc(tmp_path, scale=1)
    meter.sample(requests=10)
    assert per_request_line("jwks", meter.first, meter.last) is None
    meter.sample(requests=10)
    assert per_request_line("jwks", meter.first, meter.last) is None


def test_the_machine_yardstick_line_names_the_moment_the_additions_and_the_seconds() -> None:
    assert speed_line("before", 1.0234) == "[machine] before: 10,000,000 pure-Python additions in 1.02 s"
    assert speed_line("after", 0.5, additions=1000) == "[machine] after: 1,000 pure-Python additions in 0.50 s"


def reader_watched_meter(root: Path) -> tuple[CpuMeter, list[int]]:
    """A meter on ``root`` that records which thread takes each of its samples."""
    meter = CpuMeter(root, own_pid=40)
    readers: list[int] = []
    read_now = meter.sample

    def sample(requests: int) -> None:
        readers.append(threading.get_ident())
        read_now(requests)

    meter.sample = sample  # type: ignore[method-assign]
    return meter, readers


def test_samples_asked_for_later_are_read_off_the_callers_thread_in_order(tmp_path: Path) -> None:
    meter, readers = reader_watched_meter(tmp_path)
    for scale, requests in ((1, 100), (3, 150), (5, 200)):
        fake_proc(tmp_path, scale=scale)
        meter.sample_later(requests)
        meter.settle()  # waits for the read, so the next scale is not written under it
    assert len(readers) == 3 and threading.get_ident() not in readers
    assert meter.first is not None and meter.first.requests == 100
    assert meter.last is not None and meter.last.requests == 200
    line = per_request_line("revoke", meter.first, meter.last)
    assert line is not None and line.startswith("[revoke] CPU µs per request (100 requests): serve ")


def test_progress_ticks_sample_off_the_event_loops_thread_and_finish_prints_the_line(tmp_path: Path) -> None:
    meter, readers = reader_watched_meter(tmp_path)
    out = io.StringIO()
    progress = Progress("revoke", warmup=0.0, duration=60.0, stream=out, cpu=meter)
    progress.start()
    fake_proc(tmp_path, scale=1)
    progress.tick(100, 0)
    meter.settle()
    fake_proc(tmp_path, scale=3)
    progress.tick(300, 0)
    result = ScenarioResult("revoke", 32, 1, 1.0, 300, 0, 300.0, *([1.0] * 5))
    progress.finish(result)  # settles the last sample before printing
    assert len(readers) == 2 and threading.get_ident() not in readers
    assert "[revoke] CPU µs per request (200 requests): serve " in out.getvalue()


def test_a_sample_that_failed_on_the_meters_thread_fails_settle(tmp_path: Path) -> None:
    root = tmp_path / "proc"
    meter = CpuMeter(root, own_pid=40)
    meter.sample_later(100)  # no /proc to read yet: this sample raises on the meter's thread
    futures.wait(meter._pending)  # it has failed before the next one is asked for
    root.mkdir()
    fake_proc(root, scale=1)
    meter.sample_later(200)  # this one succeeds
    with pytest.raises(OSError):
        meter.settle()
    assert meter.first is not None and meter.first.requests == 200

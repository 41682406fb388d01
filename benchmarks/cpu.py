"""CPU time per request, by process group, read from ``/proc`` (Linux) while a scenario runs on this machine.

Requests a second follow the machine: on a shared virtual machine the same commit has given results a quarter apart
from one run to the next. The CPU each process spends per request drifts far less, so two commits compare better on
it, and it says where the time goes: the ``keyledger serve`` process (the supervisor, or the whole server with one
worker), its API worker processes, PostgreSQL, Redis and this load generator; ``machine`` is every core's busy time
(``/proc/stat``), so what it holds beyond the groups is everything else. A process that exits during the window
takes its time with it: the server's pools keep their connections, so its processes and backends normally stay, and
the line says how many processes were started meanwhile when any were (session 18: PostgreSQL's parallel workers,
140 a second, held about two fifths of the machine's time, and no group showed it).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CpuMeter", "CpuSample", "group_times", "machine_speed", "per_request_line", "read_procs", "speed_line"]

SERVE_MARKERS = ("keyledger serve", "infrastructure.cli serve")


@dataclass(frozen=True, slots=True)
class Proc:
    """What one process's ``stat`` and ``cmdline`` say."""

    pid: int
    ppid: int
    comm: str
    cmdline: str
    seconds: float  # user + system CPU time


@dataclass(frozen=True, slots=True)
class CpuSample:
    """CPU seconds per group, and the requests completed, at one instant."""

    requests: int
    groups: Mapping[str, float]
    started: int = 0  # processes the machine had started since boot (``/proc/stat``)


def read_procs(root: Path = Path("/proc")) -> list[Proc]:
    """Every process readable under ``root`` (processes that vanish while being read are skipped)."""
    ticks = os.sysconf("SC_CLK_TCK")
    procs = []
    for entry in root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        procs.append(Proc(pid=int(entry.name), ppid=int(fields[1]), comm=comm, cmdline=cmdline,
                          seconds=(int(fields[11]) + int(fields[12])) / ticks))
    return procs


def machine_stat(root: Path = Path("/proc")) -> tuple[float, int]:
    """From one read of ``/proc/stat``: the busy CPU seconds of all cores since boot (everything but idle and iowait)
    and the processes and threads started since boot (its ``processes`` line; 0 if it has none)."""
    lines = (root / "stat").read_text().splitlines()
    values = [int(v) for v in lines[0].split()[1:]]
    started = next((int(line.split()[1]) for line in lines if line.startswith("processes ")), 0)
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK"), started


def group_times(procs: Iterable[Proc], own_pid: int) -> dict[str, float]:
    """CPU seconds of each group: ``serve``, ``api workers`` (its descendants), ``postgres``, ``redis`` and
    ``load generator`` (``own_pid`` and its descendants)."""
    procs = list(procs)
    children: dict[int, list[Proc]] = {}
    for proc in procs:
        children.setdefault(proc.ppid, []).append(proc)

    def descendants(pid: int) -> list[Proc]:
        found, stack = [], list(children.get(pid, []))
        while stack:
            proc = stack.pop()
            found.append(proc)
            stack.extend(children.get(proc.pid, []))
        return found

    def is_postgres(proc: Proc) -> bool:
        return proc.comm == "postgres"

    def is_redis(proc: Proc) -> bool:
        return proc.comm.startswith("redis-server")

    servers = [p for p in procs if any(marker in p.cmdline for marker in SERVE_MARKERS)]
    own = [p for p in procs if p.pid == own_pid]
    # The embedded PostgreSQL and Redis of ``make run`` may be the server's children: they count as themselves.
    workers = [d for p in servers for d in descendants(p.pid) if not (is_postgres(d) or is_redis(d))]
    return {
        "serve": sum(p.seconds for p in servers),
        "api workers": sum(p.seconds for p in workers),
        "postgres": sum(p.seconds for p in procs if is_postgres(p)),
        "redis": sum(p.seconds for p in procs if is_redis(p)),
        "load generator": sum(p.seconds for p in own + [d for p in own for d in descendants(p.pid)]),
    }


class CpuMeter:
    """Samples the groups at the first and the latest progress tick of the measurement window.

    Reading every process of ``/proc`` takes 4 to 5 ms of Python on an idle machine and more on one the load keeps
    busy. Done on the load generator's event loop, it held up every response in flight once a second (a 10 s
    ``revoke`` run at 4,600 a second: the loop's longest lag 20.2 ms with it there, 9.0 ms with it on a thread), so a
    run's p99 was partly the meter's own doing. ``sample_later`` reads on a thread of its own, which lets go of the
    GIL at every file it opens: the event loop goes on answering while it reads.
    """

    def __init__(self, root: Path = Path("/proc"), own_pid: int | None = None) -> None:
        """Reads ``root`` (``/proc``); the load generator is ``own_pid`` (this process) and its children."""
        self._root, self._own_pid = root, own_pid if own_pid is not None else os.getpid()
        self.first: CpuSample | None = None
        self.last: CpuSample | None = None
        self._reader: ThreadPoolExecutor | None = None
        self._pending: list[Future[None]] = []

    def sample_later(self, requests: int) -> None:
        """``sample`` on the meter's own thread (samples are taken in the order asked for; ``settle`` waits)."""
        if self._reader is None:
            self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cpu-meter")
        self._pending.append(self._reader.submit(self.sample, requests))  # one a second: kept until ``settle``

    def settle(self) -> None:
        """Waits for the samples asked for with ``sample_later`` (a failed one raises here) and stops the thread."""
        pending, self._pending = self._pending, []
        if self._reader is not None:
            self._reader.shutdown(wait=True)  # every sample taken (or failed) and the thread gone, before raising
            self._reader = None
        for future in pending:
            future.result()

    def sample(self, requests: int) -> None:
        """Records the groups' times now, with the requests completed so far."""
        groups = group_times(read_procs(self._root), self._own_pid)
        groups["machine"], started = machine_stat(self._root)
        taken = CpuSample(requests=requests, groups=groups, started=started)
        if self.first is None:
            self.first = taken
        else:
            self.last = taken


def per_request_line(scenario: str, first: CpuSample | None, last: CpuSample | None) -> str | None:
    """``[scenario] CPU µs per request: ...`` between two samples, or None if no request completed between them.

    When processes or threads were started between the samples, the line says how many: the time of those that
    exited by the second sample is in no group, only in ``machine``.
    """
    if first is None or last is None or last.requests <= first.requests:
        return None
    count = last.requests - first.requests
    parts = [f"{name} {(last.groups[name] - first.groups.get(name, 0.0)) / count * 1e6:.0f}" for name in last.groups]
    line = f"[{scenario}] CPU µs per request ({count} requests): " + ", ".join(parts)
    started = last.started - first.started
    if started > 0:
        line += f"; processes or threads started meanwhile: {started:,} (those that exited count in machine alone)"
    return line


YARDSTICK_ADDITIONS = 10_000_000


def machine_speed(additions: int = YARDSTICK_ADDITIONS) -> float:
    """Seconds this machine takes for ``additions`` pure-Python additions now: a yardstick printed before and after
    the scenarios, so runs of different days can be told apart from changes of the code (a shared virtual machine
    has run the same loop in 0.56 s one day and 1.6 s the next, and CPU µs per request move with it)."""
    started = time.perf_counter()
    total = 0
    for i in range(additions):
        total += i
    return time.perf_counter() - started


def speed_line(when: str, seconds: float, additions: int = YARDSTICK_ADDITIONS) -> str:
    """``[machine] <when>: ten million pure-Python additions in 1.02 s``."""
    return f"[machine] {when}: {additions:,} pure-Python additions in {seconds:.2f} s"

"""The job registry: what the workers can run, declared without touching a broker.

Modules of ``workers`` declare their jobs with :func:`job` at import; that only records a function in
:data:`JOBS` (no broker, no connection, no I/O). The process that runs jobs imports :data:`JOB_MODULES`, then
``workers.runtime.declare`` turns every registered job into a Dramatiq actor on the broker that process built.

A job function takes the process's :class:`~infrastructure.bootstrap.Container` first and JSON-serialisable keyword
arguments after it, and must be idempotent: Dramatiq delivers at least once, and two schedulers may enqueue the
same periodic job.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Modules whose import registers jobs; the worker imports every one of them before declaring actors.
JOB_MODULES: tuple[str, ...] = ("workers.maintenance", "workers.webhooks", "workers.email", "workers.expiry",
                               "workers.keys")

DEFAULT_QUEUE = "keyledger"


@dataclass(frozen=True, slots=True)
class Job:
    """A registered job.

    Attributes:
        name: The actor name, unique; also the name the scheduler and ``enqueue`` use.
        fn: ``fn(container, **kwargs)``.
        queue: The Dramatiq queue.
        max_retries: How often Dramatiq retries a failing run (exponential backoff between ``min_backoff`` and
            ``max_backoff`` milliseconds).
        min_backoff: First retry delay in milliseconds.
        max_backoff: Largest retry delay in milliseconds.
        time_limit: Milliseconds after which a run is interrupted.
        every: Seconds between runs enqueued by the scheduler, or None for jobs only enqueued on demand.
        exclusive: A periodic job whose run is skipped while another run of it is in progress
            (``workers.runtime.exclusive_run``): for sweeps that may run for minutes. A job that must run within
            seconds of a worker dying (the webhook dispatcher, the heartbeat) is not: a dead run's lock lasts until
            its time limit has passed.
    """

    name: str
    fn: Callable[..., Any]
    queue: str = DEFAULT_QUEUE
    max_retries: int = 3
    min_backoff: int = 1_000
    max_backoff: int = 300_000
    time_limit: int = 600_000
    every: float | None = None
    exclusive: bool = False


JOBS: dict[str, Job] = {}


def job(name: str, **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Registers the decorated function as the job ``name`` (see :class:`Job` for ``options``)."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in JOBS and JOBS[name].fn is not fn:
            raise ValueError(f"job {name!r} is registered twice")
        JOBS[name] = Job(name=name, fn=fn, **options)
        return fn

    return register


def periodic() -> list[Job]:
    """The jobs the scheduler enqueues, by name."""
    return sorted((j for j in JOBS.values() if j.every is not None), key=lambda j: j.name)

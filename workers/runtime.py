"""Running jobs: actors declared on a per-process broker, a worker loop and a scheduler.

Every process builds its own container (application, connection pool) and broker after it starts; nothing here
connects at import. ``keyledger worker`` and ``keyledger scheduler`` call :func:`run_worker` and
:func:`run_scheduler`; embedded ``keyledger serve`` runs both in its own process.

Two schedulers at once do no harm: each periodic job runs at most once per time slot of its period, because
enqueuing a slot first claims a Redis key for it with ``SET NX`` (whoever claims it enqueues, the other skips).
Jobs are idempotent besides, so a duplicate delivery by Dramatiq changes nothing either. A sweep's run (an exclusive
job) is skipped while another run of the same job is still in progress (``exclusive_run``).
"""

import contextlib
import importlib
import logging
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import dramatiq
import msgspec
from dramatiq.middleware import CurrentMessage
from redis import RedisError

from projections.failures import FailureStreak
from workers.jobs import JOB_MODULES, JOBS, Job, periodic

logger = logging.getLogger("keyledger.jobs")


def load_jobs() -> dict[str, Job]:
    """Imports every job module (registration only) and returns the registry."""
    for module in JOB_MODULES:
        importlib.import_module(module)
    return JOBS


def drain(step: Callable[[int], int], *, batch_size: int, max_batches: int) -> tuple[int, bool]:
    """Runs ``step(batch_size)`` (which deletes or handles up to that many rows and says how many) until a batch
    comes back short, at most ``max_batches`` times; returns the total and whether more are left for the next run
    (a backlog drains run by run, no run outliving its time limit)."""
    total = 0
    for _ in range(max_batches):
        done = step(batch_size)
        total += done
        if done < batch_size:
            return total, False
    return total, True


def log_line(**fields: Any) -> str:
    """One structured (JSON) log line."""
    return msgspec.json.encode(fields).decode()


# Deletes a run's lock only if it is still that run's (an expired lock may have been taken by another run since).
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
# Seconds a run's lock outlives the run's time limit: past it the run was interrupted, or its process died.
LOCK_MARGIN = 30


def run_lock_key(namespace: str, spec: Job) -> str:
    """The Redis key an exclusive job's run holds while it runs."""
    return f"{namespace}:running:{spec.name}"


@contextlib.contextmanager
def exclusive_run(container: Any, spec: Job) -> Iterator[bool]:
    """Yields whether this run of an exclusive periodic job may go on: not while another run of it holds its lock.

    The scheduler enqueues a periodic job every period, and a sweep may run for minutes (a backlog after an
    outage); runs that overlapped would go over the same rows from the oldest, clash, fall back to a write per row
    and keep every worker thread busy, with deliveries waiting behind them on the same queue. The next period's run
    continues where a run left off, so a run that finds the lock taken has nothing to add. The lock expires
    ``LOCK_MARGIN`` seconds after the job's time limit, for a process that died holding it.
    """
    if not spec.exclusive:
        yield True
        return
    key, token = run_lock_key(container.namespace, spec), uuid.uuid4().hex
    if not container.redis.set(key, token, nx=True, px=spec.time_limit + LOCK_MARGIN * 1000):
        yield False
        return
    try:
        yield True
    finally:
        try:
            container.redis.eval(_RELEASE, 1, key, token)
        except RedisError as exc:  # the run's own outcome stands; the lock expires on its own
            logger.warning(log_line(event="run lock not released", job=spec.name, error=type(exc).__name__))


def _runner(container: Any, spec: Job) -> Callable[..., None]:
    """Wraps a job: one structured log line per run with its outcome and duration; an exclusive job's run (a sweep's)
    is skipped while another run of it is in progress (``exclusive_run``)."""

    def run(**kwargs: Any) -> None:
        message = CurrentMessage.get_current_message()
        started = time.perf_counter()
        outcome = "ok"
        try:
            with exclusive_run(container, spec) as alone:
                if alone:
                    spec.fn(container, **kwargs)
                else:
                    outcome = "skipped: another run is in progress"
        except BaseException as exc:  # Dramatiq's TimeLimitExceeded is no Exception: an interrupted run failed too
            outcome = f"failed: {type(exc).__name__}"
            raise
        finally:
            retries = message.options.get("retries", 0) if message else 0
            logger.info(log_line(job=spec.name, message_id=message.message_id if message else None, outcome=outcome,
                                 retries=retries, duration_ms=round((time.perf_counter() - started) * 1000, 1)))

    run.__name__ = spec.name
    return run


def declare(broker: dramatiq.Broker, container: Any) -> dict[str, dramatiq.Actor]:
    """Declares every registered job as an actor on ``broker``, running against ``container``."""
    actors = {}
    container.broker = broker  # jobs that enqueue other jobs (the webhook dispatcher) enqueue here
    for spec in load_jobs().values():
        actors[spec.name] = dramatiq.Actor(
            _runner(container, spec), broker=broker, actor_name=spec.name, queue_name=spec.queue, priority=0,
            options={"max_retries": spec.max_retries, "min_backoff": spec.min_backoff,
                     "max_backoff": spec.max_backoff, "time_limit": spec.time_limit})
    return actors


def enqueue(broker: dramatiq.Broker, name: str, *, delay_ms: int | None = None, **kwargs: Any) -> str:
    """Enqueues the job ``name`` (declared on ``broker``) and returns its message id."""
    actor = broker.get_actor(name)
    return actor.send_with_options(kwargs=kwargs, delay=delay_ms).message_id


_BOOTED: "weakref.WeakSet[dramatiq.Broker]" = weakref.WeakSet()


def boot(broker: dramatiq.Broker) -> None:
    """Tells the broker's middleware that its process has booted, once per broker, as Dramatiq's own ``dramatiq``
    command does in each worker process: the TimeLimit middleware starts its watchdog then. Without it no job's
    ``time_limit`` was enforced, and a job that never returns would hold its worker thread for good."""
    if broker not in _BOOTED:
        _BOOTED.add(broker)
        broker.emit_after("process_boot")


def run_worker(broker: dramatiq.Broker, stop: threading.Event, *, threads: int = 4) -> None:
    """Consumes the broker's queues with ``threads`` worker threads until ``stop`` is set."""
    boot(broker)
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=250)
    worker.start()
    logger.info(log_line(event="worker started", threads=threads, queues=sorted(broker.get_declared_queues())))
    try:
        stop.wait()
    finally:
        worker.stop(timeout=10_000)
        logger.info(log_line(event="worker stopped"))


# Seconds a claimed slot is remembered at least: a scheduler whose host clock runs behind another's by less than this
# finds the slots it computes already claimed (remembered for two periods only, a one-second job's slots were claimed
# again by a scheduler three seconds behind, and the job enqueued twice a second).
SLOT_MEMORY = 300


def claim_slot(redis: Any, namespace: str, spec: Job, now: float) -> bool:
    """Claims the current time slot of a periodic job; only one scheduler per slot succeeds, also one whose host
    clock runs behind by less than ``SLOT_MEMORY`` seconds."""
    assert spec.every is not None
    slot = int(now // spec.every)
    key = f"{namespace}:schedule:{spec.name}:{slot}"
    return bool(redis.set(key, "1", nx=True, ex=max(int(spec.every * 2), SLOT_MEMORY)))


def schedule_due(broker: dramatiq.Broker, redis: Any, namespace: str, now: float) -> list[str]:
    """Enqueues every periodic job whose current slot nobody has claimed yet; returns their names."""
    enqueued = []
    for spec in periodic():
        if claim_slot(redis, namespace, spec, now):
            enqueue(broker, spec.name)
            enqueued.append(spec.name)
    return enqueued


def run_scheduler(broker: dramatiq.Broker, redis: Any, namespace: str, stop: threading.Event, *,
                  tick: float = 1.0, clock: Callable[[], float] = time.time) -> None:
    """Enqueues periodic jobs on time until ``stop`` is set (see the module docstring for two schedulers)."""
    logger.info(log_line(event="scheduler started", jobs={j.name: j.every for j in periodic()}))
    streak = FailureStreak("the scheduler")  # a Redis outage: a line a minute, not one a tick
    while not stop.is_set():
        try:
            for name in schedule_due(broker, redis, namespace, clock()):
                logger.info(log_line(event="scheduled", job=name))
        except Exception as exc:  # Redis away: try again next tick rather than die
            streak.failed(exc)
        else:
            streak.succeeded()
        stop.wait(tick)

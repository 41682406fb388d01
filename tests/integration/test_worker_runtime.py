"""The job runtime against a real Redis broker: scheduling slots, actors, the worker loop and ``keyledger worker``."""

import dataclasses
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import dramatiq
import pytest
from dramatiq.middleware import TimeLimitExceeded

from infrastructure.bootstrap import Container
from tests.conftest import SECRET_KEY, eventually
from workers.jobs import Job
from workers.maintenance import heartbeat_key
from workers.runtime import (
    LOCK_MARGIN,
    SLOT_MEMORY,
    _runner,
    claim_slot,
    enqueue,
    load_jobs,
    run_lock_key,
    run_worker,
    schedule_due,
)


def run_until_interrupted(broker: Any, container: Container | None, spec: Job,
                          done: Callable[[], bool] = lambda: True,
                          looking: Callable[[], str] | None = None) -> list[str]:
    """Runs ``spec`` (its function replaced by one that outlives any time limit) on a one-thread worker until its
    time limit interrupts it and ``done()`` holds; returns what the run saw: what ``looking()`` said as it began,
    if given, then "interrupted" or "finished"."""
    seen: list[str] = []

    def endless(_container: Any) -> None:
        if looking is not None:
            seen.append(looking())
        try:
            for _ in range(400):  # 20 s in all, in short sleeps: the interruption lands between two of them
                time.sleep(0.05)
            seen.append("finished")
        except TimeLimitExceeded:
            seen.append("interrupted")
            raise

    spec = dataclasses.replace(spec, fn=endless)
    actor = dramatiq.Actor(_runner(container, spec), broker=broker, actor_name=spec.name, queue_name=spec.queue,
                           priority=0, options={"max_retries": 0, "time_limit": spec.time_limit})
    stop = threading.Event()
    thread = threading.Thread(target=run_worker, args=(broker, stop), kwargs={"threads": 1})
    thread.start()
    try:
        actor.send()
        eventually(lambda: bool(seen), timeout=15)
        eventually(done, timeout=15)
    finally:
        stop.set()
        thread.join(30)
    return seen


def test_two_schedulers_claim_each_slot_once(container: Container) -> None:
    spec = Job(name=f"probe-{time.time_ns()}", fn=lambda _c: None, every=3600.0)
    now = time.time()
    claims = [claim_slot(container.redis, container.namespace, spec, now) for _ in range(2)]
    assert claims == [True, False]
    assert claim_slot(container.redis, container.namespace, spec, now + 3600.0)


def test_a_scheduler_whose_clock_runs_behind_does_not_claim_a_slot_again(container: Container) -> None:
    """A one-second job: the scheduler with the right clock claims its slots; another, 3 s (or nearly five minutes)
    behind, computes each slot after it was claimed and must find it still remembered."""
    spec = Job(name=f"dispatch-{time.time_ns()}", fn=lambda _c: None, every=1.0)
    now = time.time()
    assert claim_slot(container.redis, container.namespace, spec, now)
    slot_key = f"{container.namespace}:schedule:{spec.name}:{int(now)}"
    assert container.redis.ttl(slot_key) > SLOT_MEMORY - 5  # still there when a lagging clock reaches the slot
    assert not claim_slot(container.redis, container.namespace, spec, now)


def test_a_worker_runs_a_scheduled_job(container: Container, broker: Any) -> None:
    container.redis.delete(heartbeat_key(container))
    stop = threading.Event()
    thread = threading.Thread(target=run_worker, args=(broker, stop), kwargs={"threads": 2})
    thread.start()
    try:
        assert "heartbeat" in schedule_due(broker, container.redis, container.namespace, time.time() + 10 ** 7)
        eventually(lambda: container.redis.get(heartbeat_key(container)) is not None)
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()


def test_keyledger_worker_command_runs_jobs_and_stops_on_sigterm(container: Container, broker: Any,
                                                                  database_url: str, redis_url: str) -> None:
    container.redis.delete(heartbeat_key(container))
    env = {**os.environ, "KEYLEDGER_DATABASE_URL": database_url, "KEYLEDGER_REDIS_URL": redis_url,
           "KEYLEDGER_SECRET_KEY": SECRET_KEY}
    proc = subprocess.Popen([sys.executable, "-m", "infrastructure.cli", "worker", "--threads", "2"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        enqueue(broker, "heartbeat")
        eventually(lambda: container.redis.get(heartbeat_key(container)) is not None, timeout=60)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out.decode(errors="replace")
    assert b'"job":"heartbeat"' in out and b'"outcome":"ok"' in out


def test_a_job_that_outlives_its_time_limit_is_interrupted_and_logged_as_failed(
        broker: Any, caplog: pytest.LogCaptureFixture) -> None:
    # Dramatiq's TimeLimit middleware starts its watchdog on the process_boot signal, which only Dramatiq's own
    # command sent: every job's time_limit went unenforced.
    caplog.set_level(logging.INFO, logger="keyledger.jobs")
    spec = Job(name=f"endless-{time.time_ns()}", fn=lambda _container: None, max_retries=0, time_limit=300)
    seen = run_until_interrupted(broker, None, spec)
    assert seen == ["interrupted"]
    eventually(lambda: f'"job":"{spec.name}"' in caplog.text)
    assert '"outcome":"failed: TimeLimitExceeded"' in caplog.text  # not "ok": the run did not finish


def test_a_periodic_jobs_run_is_skipped_while_another_run_of_it_is_in_progress(
        container: Container, caplog: pytest.LogCaptureFixture) -> None:
    """A sweep's runs must not pile up behind a long one (a backlog after an outage): a run that finds the job's
    lock taken does nothing and says so; once the first run ends, the next one runs."""
    caplog.set_level(logging.INFO, logger="keyledger.jobs")
    entered, release, calls = threading.Event(), threading.Event(), []

    def slow(_container: Any) -> None:
        calls.append("run")
        entered.set()
        release.wait(30)

    spec = Job(name=f"sweep-{time.time_ns()}", fn=slow, every=30.0, time_limit=60_000, exclusive=True)
    key = run_lock_key(container.namespace, spec)
    first = threading.Thread(target=_runner(container, spec))
    first.start()
    try:
        assert entered.wait(30)
        _runner(container, spec)()  # while the first run holds the lock
        assert calls == ["run"]
        assert '"outcome":"skipped: another run is in progress"' in caplog.text
        assert 60_000 < container.redis.pttl(key) <= 60_000 + LOCK_MARGIN * 1000  # a dead run's lock expires
    finally:
        release.set()
        first.join(30)
    assert not container.redis.exists(key)
    _runner(container, spec)()
    assert calls == ["run", "run"]


def test_a_failed_run_releases_its_lock_and_a_late_run_leaves_a_successors_lock(container: Container) -> None:
    def boom(_container: Any) -> None:
        raise RuntimeError("boom")

    failing = Job(name=f"failing-{time.time_ns()}", fn=boom, every=30.0, exclusive=True)
    with pytest.raises(RuntimeError):
        _runner(container, failing)()
    assert not container.redis.exists(run_lock_key(container.namespace, failing))

    def outlived(_container: Any) -> None:  # this run's lock expired and another run took the job's lock meanwhile
        container.redis.set(run_lock_key(container.namespace, late), "successor")

    late = Job(name=f"late-{time.time_ns()}", fn=outlived, every=30.0, exclusive=True)
    _runner(container, late)()
    assert container.redis.get(run_lock_key(container.namespace, late)) == b"successor"
    container.redis.delete(run_lock_key(container.namespace, late))


def test_a_sweep_interrupted_by_its_time_limit_releases_its_lock(container: Container, broker: Any) -> None:
    """Dramatiq's TimeLimitExceeded is raised inside the run: the lock goes with it, and the next run is not kept
    waiting for the lock's own expiry."""
    spec = Job(name=f"endless-sweep-{time.time_ns()}", fn=lambda _container: None, every=30.0, max_retries=0,
               time_limit=300, exclusive=True)
    lock = run_lock_key(container.namespace, spec)

    def held() -> str:  # while the run is in progress: the lock is really taken
        return "locked" if container.redis.exists(lock) else "unlocked"

    assert run_until_interrupted(broker, container, spec, done=lambda: not container.redis.exists(lock),
                                 looking=held) == ["locked", "interrupted"]


def test_the_sweeps_run_alone_and_the_dispatcher_and_heartbeat_do_not_wait_for_a_dead_run() -> None:
    jobs = load_jobs()
    assert {name for name, spec in jobs.items() if spec.exclusive} == {
        "expire-tokens", "expire-client-secrets", "prune-revocation-list", "revoke-orphaned-tokens", "webhooks.prune"}

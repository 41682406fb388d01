"""``keyledger worker`` and ``keyledger scheduler``: the Dramatiq side of a deployment."""

import argparse
import multiprocessing
import os
from typing import Any

from infrastructure.bootstrap import Container, Endpoints, build
from infrastructure.settings import Settings
from infrastructure.signals import stop_on_signals
from infrastructure.supervision import supervise, watch_parent
from workers.broker import make_broker
from workers.runtime import declare, load_jobs, run_scheduler, run_worker
from workers.status import collect


def work(settings: Settings, endpoints: Endpoints, threads: int, parent: int | None = None) -> None:
    """One worker process: its own container and broker, built after the process started. SIGTERM/SIGINT stop it
    once its running jobs are finished; so does the end of ``parent`` (``worker --processes N``), so no orphan goes
    on consuming jobs beside the workers that start next."""
    with stop_on_signals() as stop:
        if parent is not None:
            watch_parent(parent)
        container: Container = build(settings, endpoints, migrate=False)
        try:
            broker = make_broker(endpoints.redis_url, namespace=container.namespace)
            declare(broker, container)
            run_worker(broker, stop, threads=threads)
        finally:
            container.close()


def worker(args: argparse.Namespace, settings: Settings, endpoints: Endpoints) -> int:
    """Runs ``--processes`` worker processes of ``--threads`` threads each until SIGTERM/SIGINT, or until one of them
    exits (status 1: a deployment's supervisor then restarts the whole, where a parent left with fewer workers than
    asked would look healthy)."""
    build(settings, endpoints, migrate=True).close()  # tables and the first key exist before any job runs
    if args.processes == 1:
        work(settings, endpoints, args.threads)
        return 0
    spawn = multiprocessing.get_context("spawn")
    children = [spawn.Process(target=work, args=(settings, endpoints, args.threads, os.getpid()),
                              name=f"keyledger-worker-{i}") for i in range(args.processes)]
    return supervise(children)  # SIGTERM: each child finishes its running jobs


def scheduler(args: argparse.Namespace, settings: Settings, endpoints: Endpoints) -> int:
    """Enqueues the periodic jobs until SIGTERM/SIGINT."""
    with stop_on_signals() as stop:
        container: Container = build(settings, endpoints, migrate=True)
        try:
            broker = make_broker(endpoints.redis_url, namespace=container.namespace)
            declare(broker, container)
            run_scheduler(broker, container.redis, container.namespace, stop, tick=args.tick)
        finally:
            container.close()
    return 0


def status(_args: argparse.Namespace, settings: Settings, endpoints: Endpoints) -> int:
    """Prints every status provider's rows (queue depth, heartbeat, sweep backlog, keys, ...)."""
    load_jobs()
    container: Container = build(settings, endpoints, migrate=True)
    try:
        rows = collect(container)
    finally:
        container.close()
    print(f"{'component':<24} {'metric':<20} value")
    for component, metric, value in rows:
        print(f"{component:<24} {metric:<20} {value}")
    return 0


def add_parsers(sub: Any) -> None:
    """Adds the worker and scheduler commands to the ``keyledger`` command line."""
    run = sub.add_parser("worker", help="run the Dramatiq workers (expiry sweeps, notifications, key rotation)")
    run.add_argument("--processes", type=int, default=1, help="worker processes (default 1)")
    run.add_argument("--threads", type=int, default=4, help="threads per worker process (default 4)")
    run.set_defaults(func=worker, needs_endpoints=True)
    sched = sub.add_parser("scheduler", help="enqueue the periodic jobs (two at once do no harm)")
    sched.add_argument("--tick", type=float, default=1.0, help="seconds between checks (default 1)")
    sched.set_defaults(func=scheduler, needs_endpoints=True)
    workers = sub.add_parser("workers", help="the workers' state: queue depth, last heartbeat, sweep backlog, keys")
    workers.add_argument("action", choices=["status"])
    workers.set_defaults(func=status, needs_endpoints=True)

"""A worker and the scheduler inside another process: embedded ``keyledger serve`` runs everything in one.

They run in threads next to the API, on the process's own container (built before, closed after) and a broker of
their own; leaving the context stops the scheduler, lets the worker finish its running jobs, and closes the broker,
so the container's pools and the embedded servers can be released cleanly afterwards.
"""

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import dramatiq

from workers.broker import make_broker
from workers.runtime import declare, run_scheduler, run_worker

JOIN_TIMEOUT = 30.0


@contextlib.contextmanager
def in_process_workers(container: Any, redis_url: str, *, threads: int = 2,
                       tick: float = 1.0) -> Iterator[dramatiq.Broker]:
    """Runs a worker of ``threads`` threads and the scheduler until the context exits; yields the broker."""
    broker = make_broker(redis_url, namespace=container.namespace)
    declare(broker, container)
    stop = threading.Event()
    runners = [
        threading.Thread(target=run_worker, args=(broker, stop), kwargs={"threads": threads},
                         name="keyledger-worker", daemon=True),
        threading.Thread(target=run_scheduler, args=(broker, container.redis, container.namespace, stop),
                         kwargs={"tick": tick}, name="keyledger-scheduler", daemon=True),
    ]
    for runner in runners:
        runner.start()
    try:
        yield broker
    finally:
        stop.set()
        for runner in runners:
            runner.join(JOIN_TIMEOUT)
        broker.close()

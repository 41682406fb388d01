"""``workers status`` providers against a real Redis broker: ready, delayed and dead-lettered messages counted."""

import threading
from typing import Any

import pytest

from infrastructure.bootstrap import Container
from tests.conftest import eventually
from workers.jobs import job
from workers.runtime import enqueue, run_worker
from workers.status import STATUS_PROVIDERS, collect, queue_depth

pytestmark = pytest.mark.integration

PROBE_QUEUE = "status-probe"


def always_fails(_container: object, **_: object) -> None:
    raise RuntimeError("probe")


job("status-probe-fail", queue=PROBE_QUEUE, max_retries=0)(always_fails)


def depth(container: Container, queue: str) -> dict[str, int]:
    return {metric: int(value) for component, metric, value in queue_depth(container) if component == f"queue {queue}"}




def test_queue_depth_counts_ready_delayed_and_dead_lettered_messages(container: Container, broker: Any) -> None:
    assert depth(container, "keyledger") == {"ready": 0, "in flight": 0, "delayed": 0, "dead-lettered": 0}
    enqueue(broker, "heartbeat")
    enqueue(broker, "heartbeat", delay_ms=3_600_000)
    assert depth(container, "keyledger") == {"ready": 1, "in flight": 0, "delayed": 1, "dead-lettered": 0}

    enqueue(broker, "status-probe-fail")
    stop = threading.Event()
    worker = threading.Thread(target=run_worker, args=(broker, stop), kwargs={"threads": 1})
    worker.start()
    try:
        eventually(lambda: depth(container, PROBE_QUEUE)["dead-lettered"] == 1)
    finally:
        stop.set()
        worker.join(30)
    assert depth(container, PROBE_QUEUE)["ready"] == 0


def test_a_failing_provider_shows_as_an_error_row_and_others_still_report(container: Container) -> None:
    def broken(_container: Any) -> list[tuple[str, str, str]]:
        raise ConnectionError("down")

    rows = collect(container, (broken, *STATUS_PROVIDERS))
    assert rows[0] == ("broken", "error", "ConnectionError")
    assert any(metric == "active kid" and value == container.keys.snapshot.active_kid for _, metric, value in rows)

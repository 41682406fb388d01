"""Nothing lost: every notification is delivered at least once, each delivery of one notification carrying the same
``webhook-id``, when Redis loses the queued messages or a worker is killed in the middle of a delivery.

Against a real Redis broker, real ``keyledger worker`` processes and a real HTTP receiver. The test plays the
scheduler by running the dispatcher job's body (``workers.webhooks.dispatch``) itself.
"""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from infrastructure.bootstrap import Container, Endpoints, build
from infrastructure.settings import Settings
from tests.conftest import SECRET_KEY, fresh_database
from tests.integration.support import sign_up
from tests.integration.webhook_support import add_member, outbox_rows, subscribe, webhook_settings
from tests.receiver import Receiver, serve
from workers.broker import make_broker
from workers.runtime import declare
from workers.webhooks import dispatch

pytestmark = pytest.mark.integration

LEASE = 2


@pytest.fixture
def deployment(server_url: str, redis_url: str, settings: Settings) -> Iterator[tuple[Container, Any, str]]:
    """A container and its broker on a fresh database, and that database's URL for the worker processes."""
    with fresh_database(server_url) as url:
        container = build(webhook_settings(settings, webhook_lease=LEASE), Endpoints(database_url=url,
                                                                                     redis_url=redis_url),
                          migrate=True)
        broker = make_broker(redis_url, namespace=container.namespace)
        declare(broker, container)
        broker.flush_all()
        try:
            yield container, broker, url
        finally:
            broker.flush_all()
            broker.close()
            container.close()


def start_worker(database_url: str, redis_url: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "KEYLEDGER_DATABASE_URL": database_url, "KEYLEDGER_REDIS_URL": redis_url,
           "KEYLEDGER_SECRET_KEY": SECRET_KEY, "KEYLEDGER_WEBHOOK_ALLOW_PRIVATE": "true",
           "KEYLEDGER_WEBHOOK_LEASE": str(LEASE)}
    return subprocess.Popen([sys.executable, "-m", "infrastructure.cli", "worker", "--threads", "2"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def stop_worker(proc: subprocess.Popen[bytes]) -> str:
    if proc.poll() is None:
        proc.terminate()
    out, _ = proc.communicate(timeout=60)
    return out.decode(errors="replace")


def dispatch_until(container: Container, broker: Any, done: Callable[[], bool], timeout: float = 60) -> None:
    """Plays the scheduler: runs the dispatcher every half second until ``done``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dispatch(container, broker)
        if done():
            return
        time.sleep(0.5)
    raise AssertionError("not delivered in time")


def queued_messages(broker: Any) -> int:
    return sum(int(broker.client.hlen(f"{broker.namespace}:{queue}.msgs")) for queue in broker.get_declared_queues())


def test_flushing_the_broker_queues_loses_no_notification(deployment: tuple[Container, Any, str],
                                                          redis_url: str) -> None:
    container, broker, url = deployment
    with serve(Receiver()) as receiver:
        signed = sign_up(container)
        hook = subscribe(container, signed, receiver.url, ("member.added",))
        for _ in range(3):
            add_member(container, signed)
        assert dispatch(container, broker) == 3
        assert queued_messages(broker) == 3
        broker.flush_all()  # Redis loses every queued delivery (the broker's keys only, not FLUSHALL)
        assert queued_messages(broker) == 0
        expected = {str(r["id"]) for r in outbox_rows(container, hook.webhook_id)}
        worker = start_worker(url, redis_url)
        try:
            dispatch_until(container, broker, lambda: set(receiver.ids()) >= expected)
        finally:
            out = stop_worker(worker)
        assert set(receiver.ids()) == expected, out
        assert all(r.valid_for(hook.secret) for r in receiver.requests)
        rows = outbox_rows(container, hook.webhook_id)
        assert {r["status"] for r in rows} == {"delivered"}


def test_a_worker_killed_mid_delivery_delivers_after_restart_with_the_same_webhook_id(
        deployment: tuple[Container, Any, str], redis_url: str) -> None:
    container, broker, url = deployment
    with serve(Receiver(block_first=True)) as receiver:
        signed = sign_up(container)
        hook = subscribe(container, signed, receiver.url, ("member.added",))
        add_member(container, signed)
        worker = start_worker(url, redis_url)
        try:
            dispatch_until(container, broker, receiver.first_arrived.is_set)
            os.kill(worker.pid, signal.SIGKILL)  # in the middle of the delivery: the receiver holds the request
            worker.wait(30)
        finally:
            stop_worker(worker)
        receiver.release.set()
        [row] = outbox_rows(container, hook.webhook_id)
        assert row["status"] == "pending" and row["attempts"] == 0 and row["lease_until"] is not None
        restarted = start_worker(url, redis_url)
        try:
            dispatch_until(container, broker, lambda: outbox_rows(container, hook.webhook_id)[0]["status"]
                           == "delivered")
        finally:
            out = stop_worker(restarted)
        ids = receiver.ids()
        assert len(ids) >= 2 and set(ids) == {str(row["id"])}, out
        assert all(r.valid_for(hook.secret) for r in receiver.requests)

"""Helpers of the integration tests: reading the real store back, fresh identities, gated savers."""

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from eventsourcing.persistence import Notification

from application.accounts import SignedUp, SignUp
from infrastructure.bootstrap import Container

PASSWORD = "correct horse battery staple"
T = TypeVar("T")


def in_parallel(n: int, attempt: Callable[[int], T]) -> list[T]:
    """Runs ``attempt(i)`` in ``n`` threads released together by a barrier."""
    barrier = threading.Barrier(n)

    def run(i: int) -> T:
        barrier.wait(timeout=30)
        return attempt(i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(run, range(n)))


def fresh_email(tag: str = "user") -> str:
    return f"{tag}-{uuid.uuid4().hex[:12]}@example.com"


def sign_up(container: Container, email: str | None = None, project: str = "Acme") -> SignedUp:
    return container.accounts.sign_up(SignUp(email=email or fresh_email(), password=PASSWORD, project_name=project))


def head(container: Container) -> int:
    return container.app.recorder.max_notification_id() or 0


def notifications(container: Container, after: int = 0, page: int = 500) -> Iterator[Notification]:
    """Every notification after position ``after``, in order, read in pages."""
    start = after
    while True:
        batch = container.app.recorder.select_notifications(start=start, limit=page, inclusive_of_start=False)
        yield from batch
        if len(batch) < page:
            return
        start = batch[-1].id


def state(notification: Any) -> dict[str, Any]:
    return dict(json.loads(bytes(notification.state)))


def uuid_of(value: Any) -> uuid.UUID | None:
    """Decodes a UUID as eventsourcing's JSON transcoder stores it."""
    if value is None:
        return None
    return uuid.UUID(value["_data_"])


class GatedSave:
    """A save callable that counts its calls and holds the first one until ``gate`` is set.

    Holding the committer's first transaction lets a test queue more work behind it, so that work is taken as one
    batch: what goes into a batch is then decided by the test, not by thread scheduling.
    """

    def __init__(self, save: Callable[..., Any]) -> None:
        self._save = save
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.calls: list[int] = []

    def __call__(self, *events: Any, **kwargs: Any) -> Any:
        self.calls.append(len(events))
        self.entered.set()
        if len(self.calls) == 1 and not self.gate.wait(timeout=10):
            raise TimeoutError("the gate was never opened")
        return self._save(*events, **kwargs)

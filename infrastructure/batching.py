"""Group commit: many requests' new aggregates saved in one transaction.

eventsourcing's PostgreSQL recorder takes a table lock per insert transaction so that notification ids commit in
order; that caps single-event transactions at about a thousand a second. Token issuance creates independent new
aggregates, so concurrent requests can share a transaction: each caller hands its aggregates to the committer thread
and blocks until the batch holding them is durably committed. The response is sent only after that, so a token is
never returned before its TokenIssued event is stored.
"""

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

from eventsourcing.persistence import IntegrityError

logger = logging.getLogger(__name__)

_STOP = object()


class GroupCommitter:
    """Saves aggregates in batches from one background thread; callers block until their batch commits."""

    def __init__(self, save: Callable[..., Sequence[Any]], max_batch: int = 256, timeout: float = 10.0) -> None:
        self._save = save
        self._max_batch = max_batch
        self._timeout = timeout
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="keyledger-group-commit", daemon=True)
        self._thread.start()

    def __call__(self, *aggregates: Any) -> int:
        """Saves ``aggregates`` atomically (together with other callers' aggregates) and returns the position."""
        return self.submit(*aggregates).result(timeout=self._timeout)

    def submit(self, *aggregates: Any) -> "Future[int]":
        """Queues ``aggregates`` for the next batch; the future resolves to the position once they are committed."""
        future: Future[int] = Future()
        self._queue.put((aggregates, future))
        return future

    def close(self) -> None:
        """Stops the committer after the queued work is saved."""
        self._queue.put(_STOP)
        self._thread.join(timeout=self._timeout)

    def _take_batch(self) -> tuple[list[tuple[tuple[Any, ...], Future[int]]], bool]:
        first = self._queue.get()
        if first is _STOP:
            return [], True
        batch = [first]
        stop = False
        while len(batch) < self._max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                stop = True
                break
            batch.append(item)
        return batch, stop

    def _run(self) -> None:
        while True:
            batch, stop = self._take_batch()
            if batch:
                self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[tuple[tuple[Any, ...], Future[int]]]) -> None:
        # Collect the pending events once, so a failed batch can be retried caller by caller.
        per_caller = [([e for agg in aggs for e in agg.collect_events()], future) for aggs, future in batch]
        events = [e for caller_events, _ in per_caller for e in caller_events]
        try:
            recordings = self._save(*events)
        except IntegrityError:
            # One caller's aggregate conflicts: save each caller's events alone so only that caller fails.
            for caller_events, future in per_caller:
                self._commit_one(caller_events, future)
            return
        except Exception as exc:
            logger.warning("group commit of %d events failed: %s", len(events), type(exc).__name__)
            for _, future in batch:
                future.set_exception(exc)
            return
        position = max((r.notification.id for r in recordings), default=0)
        for _, future in batch:
            future.set_result(position)

    def _commit_one(self, events: list[Any], future: Future[int]) -> None:
        try:
            recordings = self._save(*events)
        except Exception as exc:
            future.set_exception(exc)
            return
        future.set_result(max((r.notification.id for r in recordings), default=0))

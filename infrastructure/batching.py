"""Group commit: many requests decided and saved together, by one thread, in one transaction.

eventsourcing's PostgreSQL recorder takes a table lock per insert transaction so that notification ids commit in
order; that caps single-event transactions at about a thousand a second. Token issuance creates independent new
aggregates, so concurrent requests can share a transaction. Callers hand either aggregates to save or token requests
to decide; the committer thread takes everything queued, reads all the batch's clients in one query, decides each
request, saves every resulting event in one transaction and then resolves each caller's future. A token is never
answered before its TokenIssued event is durably stored, and one thread doing the work keeps the GIL and the
database free of per-request hand-offs.
"""

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any

from eventsourcing.persistence import IntegrityError

logger = logging.getLogger(__name__)

_STOP = object()
LINGER = 0.001  # seconds a batch waits at most for the rest of its wave (see GroupCommitter._take_batch)
_PENDING = object()
REDECISIONS = 3  # times a request whose guard streams moved is decided again before its caller gets the conflict


@dataclass(slots=True)
class _Item:
    """One caller's work: aggregates to save, or a request to decide (whose outcome carries aggregates).

    A caller waits on ``future``: a thread's ``concurrent.futures.Future``, or an ``asyncio.Future`` of ``loop``,
    which the committer settles with one hand-off per loop and batch (``_Settlements``).
    """

    future: "Future[Any] | asyncio.Future[Any]"
    loop: asyncio.AbstractEventLoop | None = None
    aggregates: tuple[Any, ...] = ()
    request: Any = None
    outcome: Any = None
    guards: tuple[tuple[Any, int], ...] = ()  # the outcome's: streams that must be unchanged when it is saved
    events: list[Any] = field(default_factory=list)
    result: Any = _PENDING  # what the caller gets: a value or an exception, once decided

    @property
    def settled(self) -> bool:
        """Whether the committer has decided what the caller gets."""
        return self.result is not _PENDING


class _Settlements:
    """The answers of one batch, handed to their callers once the batch is done.

    Threads' futures are set at once. Each event loop gets one ``call_soon_threadsafe`` for all its callers of the
    batch: a hand-off per caller (what ``asyncio.wrap_future`` does) costs each of them a lock, a wake-up write and
    a callback chain, more than deciding its revocation.
    """

    def __init__(self) -> None:
        self._by_loop: dict[asyncio.AbstractEventLoop, list[_Item]] = {}

    def add(self, item: _Item) -> None:
        if item.loop is None:
            _settle(item)
        else:
            self._by_loop.setdefault(item.loop, []).append(item)

    def flush(self) -> None:
        by_loop, self._by_loop = self._by_loop, {}
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle_all, items)
            except RuntimeError:  # the loop is closed: nobody waits any more
                logger.debug("group commit: %d answers for a closed event loop dropped", len(items))


def _settle(item: _Item) -> None:
    """Gives the caller its answer, unless it stopped waiting (a cancelled future)."""
    result = item.result if item.settled else RuntimeError("the group committer left this request undecided")
    try:
        if item.future.done():
            return
        if isinstance(result, BaseException):
            item.future.set_exception(result)
        else:
            item.future.set_result(result)
    except InvalidStateError:  # a thread's future cancelled meanwhile: nobody waits for it
        return


class CommitTimeout(TimeoutError):
    """The group commit did not answer a caller in time (its work is skipped if not yet taken, saved if under way)."""


def _expire(future: "asyncio.Future[Any]") -> None:
    """Fails a caller's future that the committer has not answered in time (its answer, if any, is then dropped)."""
    if not future.done():
        future.set_exception(CommitTimeout("the group commit did not answer in time"))


def _settle_all(items: list[_Item]) -> None:
    for item in items:
        _settle(item)


class GroupCommitter:
    """Decides and saves in batches from one background thread; callers wait on futures."""

    def __init__(self, save: Callable[..., Sequence[Any]],
                 decide: Callable[[list[Any]], list[Any]] | None = None, *,
                 max_batch: int = 256, timeout: float = 10.0, linger: float = LINGER,
                 before_redecision: Callable[[], Any] | None = None) -> None:
        """``before_redecision`` runs before a request whose guarded save conflicted is decided again: it brings
        what the decision reads from a cache up to the store (the key set a token is signed with)."""
        self._save = save
        self._before_redecision = before_redecision
        self._linger = linger
        self._expected = 1  # the previous batch's size
        self._decide = decide
        self._max_batch = max_batch
        self._timeout = timeout
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="keyledger-group-commit", daemon=True)
        self._thread.start()

    def bind(self, decide: Callable[[list[Any]], list[Any]]) -> None:
        """Sets the request decider (built after the committer when the decider itself saves through it)."""
        self._decide = decide

    def __call__(self, *aggregates: Any, guards: Sequence[tuple[Any, int]] = ()) -> int:
        """Saves ``aggregates`` atomically (together with other callers' aggregates) and returns the position.

        ``guards``: ``(stream id, version)`` pairs the aggregates were decided on; should one have moved, nothing of
        this caller's is saved and eventsourcing's ``IntegrityError`` is raised (the caller decides again).
        """
        if threading.current_thread() is self._thread:  # called while deciding a batch: waiting would deadlock
            kwargs = {"guards": list(guards)} if guards else {}
            return max((r.notification.id for r in self._save(*aggregates, **kwargs)), default=0)
        future = self.submit(*aggregates, guards=guards)
        try:
            return int(future.result(timeout=self._timeout))
        except TimeoutError:
            future.cancel()  # still queued: skipped, as a timed-out coroutine's is (see ``_process``)
            raise

    def submit(self, *aggregates: Any, guards: Sequence[tuple[Any, int]] = ()) -> "Future[int]":
        """Queues ``aggregates`` for the next batch; the future resolves to the position once they are committed
        (or fails with ``IntegrityError`` if a ``guards`` stream moved, see ``__call__``)."""
        future: Future[int] = Future()
        self._queue.put(_Item(future=future, aggregates=aggregates, guards=tuple(guards)))
        return future

    def submit_request(self, request: Any) -> "Future[Any]":
        """Queues a request for ``decide``; the future resolves to its outcome once its aggregates are committed."""
        if self._decide is None:
            raise RuntimeError("this committer decides nothing")
        future: Future[Any] = Future()
        self._queue.put(_Item(future=future, request=request))
        return future

    async def saved(self, *aggregates: Any, guards: Sequence[tuple[Any, int]] = ()) -> int:
        """``submit`` for a coroutine: the position, once the aggregates are committed (waits without a thread).

        Raises ``CommitTimeout``, a TimeoutError (a 503 for the HTTP layer), after ``timeout`` seconds, as
        ``__call__`` does: a database that stops answering must not hold requests forever. Aggregates whose batch is
        under way are still saved; those still queued are not. ``guards`` as for ``__call__``.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._queue.put(_Item(future=future, loop=loop, aggregates=aggregates, guards=tuple(guards)))
        return await self._within_timeout(loop, future)

    async def decided(self, request: Any) -> Any:
        """``submit_request`` for a coroutine: the outcome, once its aggregates are committed (TimeoutError after
        ``timeout`` seconds, like ``saved``)."""
        if self._decide is None:
            raise RuntimeError("this committer decides nothing")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.put(_Item(future=future, loop=loop, request=request))
        return await self._within_timeout(loop, future)

    async def _within_timeout(self, loop: asyncio.AbstractEventLoop, future: "asyncio.Future[Any]") -> Any:
        """Awaits ``future``, failing it with TimeoutError after ``timeout`` seconds (one timer, no extra task:
        ``asyncio.wait_for`` would cost every request more than its hand-off)."""
        timer = loop.call_later(self._timeout, _expire, future)
        try:
            return await future
        finally:
            timer.cancel()

    def close(self) -> None:
        """Stops the committer after the queued work is saved."""
        self._queue.put(_STOP)
        self._thread.join(timeout=self._timeout)

    def _take_batch(self) -> tuple[list[_Item], bool]:
        """The next batch: what is queued, and, while it is smaller than the previous batch, what arrives within
        ``linger`` seconds of finding the queue empty.

        Under concurrent load the callers come in waves (each answered batch's callers send their next requests
        together), a little spread out in time. Taking only what is queued at the first item splits a wave into a
        small batch and a large one that waits a whole commit behind it; waiting briefly for the previous batch's
        size keeps the wave together: fewer round trips per request and a narrower spread of waits (PostgreSQL's
        commit_delay, which also waits only when there are siblings). A caller alone (the previous batch had one
        item) is never kept waiting.
        """
        first = self._queue.get()
        if first is _STOP:
            return [], True
        batch = [first]
        deadline: float | None = None
        while len(batch) < self._max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                if len(batch) >= self._expected:
                    break
                if deadline is None:
                    deadline = time.monotonic() + self._linger
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if item is _STOP:
                return batch, True
            batch.append(item)
        self._expected = len(batch)
        return batch, False

    def _run(self) -> None:
        while True:
            batch, stop = self._take_batch()
            if batch:
                try:
                    self._process(batch)
                except Exception as exc:
                    logger.warning("group commit of %d items failed: %s", len(batch), type(exc).__name__)
                    for item in batch:
                        if not item.settled:
                            item.result = exc
                except BaseException as exc:  # the thread must outlive it, or every later caller hangs
                    logger.error("group commit of %d items aborted: %s", len(batch), type(exc).__name__)
                    for item in batch:
                        if not item.settled:
                            item.result = RuntimeError(f"the group commit was aborted ({type(exc).__name__})")
                settlements = _Settlements()
                for item in batch:
                    settlements.add(item)
                settlements.flush()
            if stop:
                return

    def _process(self, batch: list[_Item]) -> None:
        """Decides the batch's requests, saves every caller's events in one transaction and records each caller's
        answer in its item (handed out by ``_run`` once the whole batch is done). A caller that stopped waiting
        before the batch was taken (cancelled, or timed out behind a slow database) is neither decided nor saved:
        nobody would get its answer, and a committer that is behind should not do work for nobody."""
        batch = [item for item in batch if not item.future.done()]
        self._decide_requests(batch)
        live = [item for item in batch if not item.settled and not item.future.cancelled()]
        for item in live:
            # Collect the pending events once, so a failed batch can be retried caller by caller.
            item.events = [e for agg in item.aggregates for e in agg.collect_events()]
        if _writes_a_guarded_stream(live):
            # A guard is checked before the batch's inserts, so it would not see a write of its own batch (a reuse
            # detection's RefreshFamilyEnded beside a rotation guarded on that stream): each caller alone, in order.
            for item in live:
                self._commit_one(item)
            return
        try:
            recordings = self._save(*[e for item in live for e in item.events], **_guards_of(live))
        except IntegrityError:
            # One caller's aggregate conflicts, or a stream one was decided on moved: save each caller's events
            # alone so only that caller fails (or, for a moved stream, is decided again).
            for item in live:
                self._commit_one(item)
            return
        position = max((r.notification.id for r in recordings), default=0)
        for item in live:
            _resolve(item, position)

    def _decide_requests(self, batch: list[_Item]) -> None:
        requests = [item for item in batch if item.request is not None]
        if not requests or self._decide is None:
            return
        for item, outcome in zip(requests, self._decide([item.request for item in requests]), strict=True):
            if isinstance(outcome, Exception) and not getattr(outcome, "aggregates", ()):
                item.result = outcome
            else:
                item.outcome = outcome
                item.aggregates = tuple(outcome.aggregates)
                item.guards = tuple(getattr(outcome, "guards", ()))

    def _commit_one(self, item: _Item) -> None:
        """Saves one caller's events alone. A request decided on a stream that has moved since (its guards: a client
        revoked or changed while its token was being issued, a key ring that moved while it was signed) is decided
        again on the stream as it is now, up to ``REDECISIONS`` times: its answer is then, say, the refusal a revoked
        client gets, or a token signed with the key now active. Aggregates handed in ready-made (``saved``) cannot
        be decided again here: their caller gets the conflict."""
        for attempt in range(REDECISIONS + 1):
            try:
                recordings = self._save(*item.events, **_guards_of([item]))
            except IntegrityError as exc:
                if not item.guards or item.request is None or attempt == REDECISIONS:
                    item.result = exc
                    return
                try:
                    if not self._redecided(item):
                        return  # the new decision settled it (a refusal with nothing to record)
                except Exception as decision_failed:  # its caller alone fails: the rest of the batch goes on
                    item.result = decision_failed
                    return
                continue
            except Exception as exc:
                item.result = exc
                return
            _resolve(item, max((r.notification.id for r in recordings), default=0))
            return

    def _redecided(self, item: _Item) -> bool:
        """Decides ``item``'s request again; False if there is nothing more to save (its answer is settled)."""
        item.outcome, item.aggregates, item.guards, item.events = None, (), (), []
        if self._before_redecision is not None:
            self._before_redecision()
        self._decide_requests([item])
        if item.settled:
            return False
        item.events = [e for agg in item.aggregates for e in agg.collect_events()]
        return True


class RequestRouter:
    """The committer's decider for several kinds of request: each kind's requests of a batch go, in one list, to the
    decider registered for their type, and the outcomes come back in the batch's order."""

    def __init__(self, routes: dict[type, Callable[[list[Any]], list[Any]]]) -> None:
        self._routes = routes

    def __call__(self, requests: list[Any]) -> list[Any]:
        """Decides ``requests``, kind by kind."""
        outcomes: list[Any] = [None] * len(requests)
        for kind, decide in self._routes.items():
            positions = [i for i, r in enumerate(requests) if type(r) is kind]
            if positions:
                for i, outcome in zip(positions, decide([requests[i] for i in positions]), strict=True):
                    outcomes[i] = outcome
        for i, request in enumerate(requests):
            if outcomes[i] is None:
                outcomes[i] = TypeError(f"no decider for {type(request).__name__}")
        return outcomes


def _writes_a_guarded_stream(items: Sequence[_Item]) -> bool:
    """Whether one of the items' events is on a stream one of them is guarded by."""
    guarded = {stream for item in items for stream, _ in item.guards}
    return bool(guarded) and any(event.originator_id in guarded for item in items for event in item.events)


def _guards_of(items: Sequence[_Item]) -> dict[str, Any]:
    """The save's keyword arguments for the items' guards (none at all when they have none: the plain insert)."""
    guards = list(dict.fromkeys(guard for item in items for guard in item.guards))  # a batch's tokens share clients
    return {"guards": guards} if guards else {}


def _resolve(item: _Item, position: int) -> None:
    """Records a caller's answer once its events are committed: the position, the decided outcome, or the refusal
    (an exception whose own events, its TokenRequestRefused, were saved with the batch)."""
    item.result = item.outcome if isinstance(item.outcome, BaseException) else (
        position if item.request is None else item.outcome)

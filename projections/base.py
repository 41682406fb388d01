"""A read model and its runner.

Each read model owns its tables and a tracking table. The runner reads the application's notification log in
batches, applies the events whose topics the model cares about, and records the batch's last notification id in the
same transaction as the row changes (exactly-once: a crash re-applies nothing and skips nothing). The tracking
position covers every event, relevant or not, so "caught up to position N" is a meaningful wait for read-your-writes.
"""

import hashlib
import logging
import threading
import time
from abc import abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composable, Identifier, Literal

from projections.ddl import repeatable
from projections.failures import FailureStreak
from projections.rebuild import Pages, RebuildProgress, rebuild_beside

logger = logging.getLogger(__name__)

APPLICATION_NAME = "Keyledger"
TENANT_ROLE = "keyledger_tenant"
TENANT_SETTING = "keyledger.project_id"

# The role the request path queries tenant tables as. It owns nothing and is not a superuser, so PostgreSQL applies
# row-level security to it; roles are cluster-wide, so a concurrent creation by another database is tolerated.
_CREATE_TENANT_ROLE = SQL(
    "DO $$ BEGIN "
    "IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {name}) THEN "
    "CREATE ROLE {role} NOLOGIN NOSUPERUSER NOBYPASSRLS; END IF; "
    "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
).format(name=Literal(TENANT_ROLE), role=Identifier(TENANT_ROLE))


class ReadModel(PostgresTrackingRecorder):
    """Base of read models: declares tables and topics, applies events, answers queries."""

    name: ClassVar[str]
    topics: ClassVar[frozenset[str]]
    tables: ClassVar[tuple[str, ...]]
    # Tables of tenant data: each has a ``project_id`` column and a row-level security policy confining the
    # tenant role to the project named by the transaction's ``keyledger.project_id`` setting.
    tenant_tables: ClassVar[tuple[str, ...]] = ()
    # Whether every statement that applies events reaches rows by key (an id, an index range): its transactions then
    # run with sequential scans disabled (``lock``). A prepared statement keeps its generic plan for the connection's
    # life, and one planned while a table was small scans it whole, every batch, however large it has grown since;
    # only new statistics of the table (autovacuum's ANALYZE or VACUUM, when it runs) make PostgreSQL plan it again.
    keyed_writes: ClassVar[bool] = False
    # Set on a rebuild's private copies of the model (``projections.rebuild``): the schema its rebuilt tables live
    # in until they are swapped in, and whether every table the model names is there (the copy that creates them).
    shadow_schema: str | None = None
    shadow_everything: bool = False

    def __init__(self, datastore: Any, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        self.sql_create_statements.extend(self.create_statements())
        self.sql_create_statements.extend(self.security_statements())
        # Repeated by every process that starts: no lock on what exists, a bounded wait for one (``projections.ddl``).
        self.sql_create_statements[:] = repeatable(self.sql_create_statements, self.datastore.lock_timeout)
        # The position this process's runner last read or wrote, and the waiters on it: with a runner running,
        # read-your-writes waits cost no query of their own (the runner re-reads the position every interval,
        # whichever process applied the events).
        self._seen = 0
        self._changed = threading.Condition()
        self.wake = threading.Event()
        self.runner_active = False

    @property
    def seen(self) -> int:
        """The position this process's runner last read or wrote."""
        return self._seen

    def observe(self, position: int) -> None:
        """Records a position read or written by this process's runner and wakes the waiters it satisfies."""
        with self._changed:
            if position > self._seen:
                self._seen = position
                self._changed.notify_all()

    def security_statements(self) -> list[Composable]:
        """Row-level security on the tenant tables, and the tenant role's read access to them."""
        if not self.tenant_tables:
            return []
        schemas = sorted({self.schema_of(name) for name in self.tenant_tables})
        statements: list[Composable] = [_CREATE_TENANT_ROLE, *(SQL("GRANT USAGE ON SCHEMA {} TO {}").format(
            Identifier(schema), Identifier(TENANT_ROLE)) for schema in schemas)]
        for name in self.tenant_tables:
            table, policy = self.table(name), Identifier(f"{name}_tenant")
            statements += [
                SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(table),
                SQL("GRANT SELECT ON {} TO {}").format(table, Identifier(TENANT_ROLE)),
                SQL("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_policies WHERE schemaname = {s} AND tablename = {t} "
                    "AND policyname = {p}) THEN CREATE POLICY {policy} ON {table} FOR SELECT TO {role} USING "
                    "(project_id = NULLIF(current_setting({setting}, true), '')::uuid); END IF; END $$").format(
                    s=Literal(self.schema_of(name)), t=Literal(name), p=Literal(f"{name}_tenant"), policy=policy,
                    table=table, role=Identifier(TENANT_ROLE), setting=Literal(TENANT_SETTING)),
            ]
        return statements

    def tenant_select(self, project_id: UUID, query: Composable, params: Any) -> list[DictRow]:
        """Runs a read of tenant tables for one request, as the tenant role confined to ``project_id``.

        The query's own ``WHERE project_id = ...`` is the first line of defence; this is the second: even a query
        that forgot it, or named another project, sees only the rows of the request's project.
        """
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(SQL("SET LOCAL ROLE {}").format(Identifier(TENANT_ROLE)))
            curs.execute("SELECT set_config(%s, %s, true)", (TENANT_SETTING, str(project_id)))
            curs.execute(query, params)
            return curs.fetchall()

    @abstractmethod
    def create_statements(self) -> list[Composable]:
        """Returns the DDL of the model's own tables."""

    @abstractmethod
    def apply(self, curs: Cursor[DictRow], event: Any) -> None:
        """Applies one domain event to the model's tables."""

    def schema_of(self, name: str) -> str:
        """The schema a table of the model is in: the datastore's, or a rebuild's for the tables it rebuilds."""
        if self.shadow_schema is not None and (self.shadow_everything or name in self.tables):
            return self.shadow_schema
        return str(self.datastore.schema)

    def table(self, name: str) -> Composable:
        """Returns the schema-qualified identifier of one of the model's tables."""
        return SQL("{}.{}").format(Identifier(self.schema_of(name)), Identifier(name))

    def position(self) -> int:
        """The notification id up to which the model is current."""
        return self.max_tracking_id(APPLICATION_NAME) or 0

    def lock_rebuilds(self, curs: Cursor[DictRow], *, exclusive: bool) -> bool:
        """Takes the model's rebuild lock for the transaction: shared by a rebuild for its whole length (it writes the
        tables it does not rebuild without the model's lock, ``projections.rebuild``), exclusive, without waiting,
        by what else writes those tables (the outbox's pruning); returns whether it is held."""
        function = "pg_try_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        curs.execute(f"SELECT {function}(%s) AS held", (self.lock_key(" rebuild"),))
        row = curs.fetchone()
        return not exclusive or bool(row and row["held"])

    def lock_key(self, purpose: str = "") -> int:
        """The key of one of the model's advisory locks: its writers' (``lock``), or another ``purpose``'s."""
        digest = hashlib.blake2b(f"keyledger read model {self.name}{purpose}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big", signed=True)

    def lock(self, curs: Cursor[DictRow], *, wait: bool = True) -> bool:
        """Takes the model's transaction-scoped advisory lock: one writer at a time (runners of several processes,
        a rebuild), so no two apply the same events or race on the tracking position. With ``wait=False``, returns
        False at once when another writer holds it."""
        key = self.lock_key()
        function = "pg_advisory_xact_lock" if wait else "pg_try_advisory_xact_lock"
        if self.keyed_writes:  # in the same round trip (see ``keyed_writes``)
            curs.execute(f"SELECT {function}(%s) AS held, set_config('enable_seqscan', 'off', true)", (key,))
        else:
            curs.execute(f"SELECT {function}(%s) AS held", (key,))
        if wait:
            return True
        row = curs.fetchone()
        return bool(row and row["held"])

    def decode(self, mapper: Any, notifications: Sequence[Any]) -> list[Any]:
        """Turns a batch of notifications into what ``apply_events`` takes: domain events (models that need each
        event's global position, such as the audit ledger, return them with it)."""
        return [mapper.to_domain_event(n) for n in notifications]

    def apply_events(self, curs: Cursor[DictRow], events: Sequence[Any]) -> None:
        """Applies a batch of events inside the caller's transaction (models may coalesce)."""
        for event in events:
            self.apply(curs, event)

    def apply_batch(self, events: Sequence[Any] | Callable[[], Sequence[Any]], last_id: int, *,
                    after: int | None = None, wait: bool = True) -> bool:
        """Applies ``events`` and records ``last_id`` as the new position, in one transaction.

        With ``after``, applies nothing and returns False unless the position is still ``after`` once the lock is
        held: another writer (another process's runner, a rebuild) got there first, and the caller re-reads.
        ``events`` may be a callable, called only once the lock is held and the position checked: runners of
        several processes race for the same batch, and only the winner should spend the decoding. With
        ``wait=False``, applies nothing and returns False when another writer holds the model's lock.

        The commit waits for its WAL flush, as the event store's do. Committed asynchronously, a batch left its WAL
        (the audit ledger writes the most) for the store's next commit to flush, and that commit holds the store's
        table lock until it is flushed (``infrastructure.recorder``): every writer of the store waited on it. The
        webhook outbox needs it besides: a worker may deliver a row as soon as it is committed, so none may be lost.
        """
        with self.datastore.transaction(commit=True) as curs:
            if not self.lock(curs, wait=wait):
                return False
            if after is not None and (self._max_tracking_id(APPLICATION_NAME, curs) or 0) != after:
                return False
            self.apply_events(curs, events() if callable(events) else events)
            self._insert_tracking(curs, Tracking(APPLICATION_NAME, last_id))
        return True

    def rebuild(self, pages: Pages | Iterable[tuple[Sequence[Any], int, int]],
                progress: Callable[[RebuildProgress], None] | None = None, *, attempts: int | None = None) -> int:
        """Replaces the model's content by replaying the store beside it and swapping the result in, in one
        transaction (``projections.rebuild``); returns the new position.

        ``pages(start, stop)`` gives the model's events after ``start`` up to ``stop`` (None: the store's head as
        then read) as ``(events, last_id, head)`` pages; a plain iterable of pages is replayed as it comes.
        ``attempts``: the swap's, before ``TablesInUse`` (None: ``projections.rebuild.SWAP_ATTEMPTS``).
        """
        last = rebuild_beside(self, pages, progress, attempts=attempts)
        with self._changed:
            self._seen = last
        return last

    def tracking_reset(self, curs: Cursor[DictRow], position: int) -> None:
        """Sets the model's position to ``position`` (0: none), whatever it was, inside the caller's transaction."""
        curs.execute(SQL("DELETE FROM {}.{} WHERE application_name = %s").format(
            Identifier(self.datastore.schema), Identifier(self.tracking_table_name)), (APPLICATION_NAME,))
        if position:
            self._insert_tracking(curs, Tracking(APPLICATION_NAME, position))

    def release_waiters(self) -> None:
        """Wakes every waiter so it re-checks (used when the runner stops: they then read the position)."""
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, position: int, timeout: float = 5.0) -> None:
        """Blocks until the model is current up to ``position``; raises TimeoutError after ``timeout`` seconds."""
        if self._seen >= position:
            return
        deadline = time.monotonic() + timeout
        if self.runner_active:
            self.wake.set()  # the runner polls now rather than at the end of its interval
            with self._changed:
                while self._seen < position:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not self.runner_active:
                        break
                    self._changed.wait(remaining)
            if self._seen >= position:
                return
        delay = 0.002
        while self.position() < position:
            if time.monotonic() > deadline:
                raise TimeoutError(f"read model {self.name} did not reach position {position}")
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def reset(self) -> None:
        """Empties the model's tables and its tracking (tests; ``rebuild`` is the safe way on a live system)."""
        self.rebuild(())


class SharedDecoder:
    """The application's mapper for the runners of one process: each stored event decoded once for all of them.

    Runners read the same notifications at about the same time (the audit model reads every event, the token
    lookup model every token event), and decoding one (its JSON, then the event object) costs more than applying a
    token event to a table. A runner decodes its batch holding the decoder (``batch``): one woken at the same
    moment waits, then finds the events already decoded (events are immutable, so they are shared). Decoding is
    Python work under the GIL, so the wait costs no parallelism. The last ``capacity`` events are kept: a runner
    far behind decodes its own. A runner holds the decoder inside its batch's transaction, so decoding must never
    wait on the database (no model's ``decode`` does: it only turns notifications into events).
    """

    def __init__(self, mapper: Any, capacity: int = 4096) -> None:
        self._mapper = mapper
        self._capacity = capacity
        self._events: OrderedDict[int, Any] = OrderedDict()
        self._lock = threading.RLock()

    def batch(self) -> Any:
        """Held while a runner decodes a batch (a context manager)."""
        return self._lock

    def to_domain_event(self, notification: Any) -> Any:
        """The event stored at ``notification`` (its id names it in the whole store)."""
        with self._lock:
            event = self._events.get(notification.id)
            if event is None:
                event = self._events[notification.id] = self._mapper.to_domain_event(notification)
                if len(self._events) > self._capacity:
                    self._events.popitem(last=False)
            return event


class ProjectionRunner:
    """Feeds one read model from the application's notification log."""

    def __init__(self, *, recorder: Any, mapper: Any, model: ReadModel, batch_size: int = 500,
                 interval: float = 0.05, idle_write_interval: float = 1.0, busy_interval: float | None = None) -> None:
        """Feeds ``model`` from ``recorder``'s notifications, decoded by ``mapper``, ``batch_size`` at most a pass.

        Args:
            interval: Seconds between passes (a waiter wakes the runner sooner).
            idle_write_interval: Seconds between position writes of passes with nothing of the model's.
            busy_interval: Seconds before the next pass after one that applied events (default ``interval``):
                shorter, so that under load each pass applies a small batch rather than a burst, while an idle
                model costs no more queries.
        """
        self._recorder = recorder
        self._decoder = mapper if isinstance(mapper, SharedDecoder) else SharedDecoder(mapper, capacity=0)
        self._model = model
        self._batch_size = batch_size
        self._interval = interval
        self._busy_interval = interval if busy_interval is None else busy_interval
        self._idle_write_interval = idle_write_interval
        self._written_at = 0.0
        self._short_of_head = False  # the last pass applied a full batch that stopped short of the head
        self._applied = False  # the last pass applied events
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def model(self) -> ReadModel:
        """The read model this runner feeds."""
        return self._model

    def run_once(self) -> int:
        """Processes the model's events after its position, up to the store's head, in one transaction.

        Only notifications of the model's topics are fetched; the position still advances to the head, so it
        covers every event and "caught up to N" means the same for every model.
        """
        self._short_of_head = self._applied = False
        start = self._model.position()
        self._model.observe(start)
        head = self._recorder.max_notification_id() or 0
        if head <= start:
            return 0
        notifications = self._recorder.select_notifications(start=start, limit=self._batch_size, stop=head,
                                                            topics=sorted(self._model.topics),
                                                            inclusive_of_start=False)
        # A full batch may stop short of the head: the position is then its last notification.
        last = notifications[-1].id if len(notifications) == self._batch_size else head
        if not notifications and time.monotonic() - self._written_at < self._idle_write_interval:
            # Nothing of this model's up to ``last``: its rows are already current there, so waiters may go on;
            # the position is written at most once per interval (a busy store would otherwise cost every model a
            # transaction per pass). The next pass reads from the written position again: nothing is skipped.
            self._model.observe(last)
            return last - start
        if not self._model.apply_batch(lambda: self._decode(notifications), last, after=start):
            self._model.observe(self._model.position())  # another process applied it: let waiters see that now
            return 0
        self._written_at = time.monotonic()
        self._model.observe(last)
        self._short_of_head = last < head
        self._applied = bool(notifications)
        return last - start

    def _decode(self, notifications: Sequence[Any]) -> list[Any]:
        with self._decoder.batch():
            return self._model.decode(self._decoder, notifications)

    def pages(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[list[Any], int, int]]:
        """The model's events after ``start`` up to ``stop`` (None: the store's head as read when the first page is
        asked for), in batches: ``(events, last_id, head)``.

        The head is read once: a rebuild's last pages are read holding the model's lock, and reading the head
        again after each page would chase the events a busy store keeps recording, so that a rebuild under steady
        traffic never ended and held the live runners (and every read waiting on them) off for good. What is
        recorded after that head the live runners apply once the rebuild has committed.
        """
        position = start
        head = (self._recorder.max_notification_id() or 0) if stop is None else stop
        while head > position:
            notifications = self._recorder.select_notifications(start=position, limit=self._batch_size, stop=head,
                                                                topics=sorted(self._model.topics),
                                                                inclusive_of_start=False)
            last = notifications[-1].id if len(notifications) == self._batch_size else head
            yield self._decode(notifications), last, head
            position = last

    def rebuild(self, progress: Callable[[RebuildProgress], None] | None = None, *, attempts: int | None = None
                ) -> int:
        """Rebuilds the model from the whole event store in one transaction; returns the new position."""
        return self._model.rebuild(self.pages, progress, attempts=attempts)

    def catch_up(self, progress: Callable[[int], None] | None = None) -> int:
        """Processes batches until the model is current up to the store's head as read on entry; returns the number
        of notifications covered.

        The target is read once, as ``pages`` reads it: passes that stopped only when one found nothing new never
        stopped under steady traffic (a pass with none of the model's events writes no position for up to a second,
        so every pass in that second covered something again), and a job that catches a model up (the webhook
        dispatcher, every second) spun until its time limit. A pass that another process's runner won does not
        end it either: the model may still be short of the target.
        """
        target = self._recorder.max_notification_id() or 0
        total = 0
        while self._model.seen < target:
            done = self.run_once()
            total += done
            if progress is not None and done:
                progress(total)
        self.flush()  # a last pass with none of the model's events may have left the position seen but unwritten
        return total

    def start(self) -> None:
        """Starts processing in a background thread."""
        self._thread = threading.Thread(target=self._loop, name=f"projection-{self._model.name}", daemon=True)
        self._model.runner_active = True
        self._thread.start()

    def stop(self) -> None:
        """Stops the background thread (writing the position it has seen); waiters fall back to reading the
        position themselves."""
        self._stop.set()
        self._model.wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._model.runner_active = False
        self._model.release_waiters()
        try:
            self.flush()
        except Exception:
            logger.warning("projection %s: could not write its last position", self._model.name)

    def flush(self) -> None:
        """Writes the position this process has seen, if a pass with nothing of the model's left it unwritten. Only
        if no other writer holds the model's lock: a rebuild holds it for minutes, and a stopping process must not
        wait for it (the position is only a head start for the next runner)."""
        written = self._model.position()
        if self._model.seen > written:
            self._model.apply_batch([], self._model.seen, after=written, wait=False)

    def _loop(self) -> None:
        # Polls the head every interval, and at once when a request waits for the model (read-your-writes): the
        # interval only bounds how stale an unwaited read may be, so it can be long and a busy store costs a few
        # small queries per interval, not per event. The wake-up is cleared before a pass, never after, so one
        # raised during the pass is not lost.
        failures = FailureStreak(f"projection {self._model.name}")
        while not self._stop.is_set():
            self._model.wake.clear()
            try:
                self.run_once()
            except Exception as exc:
                failures.failed(exc)
                self._stop.wait(0.5)
                continue
            failures.succeeded()
            if not self._short_of_head:  # behind by more than a batch: the next one at once, or the lag only grows
                self._model.wake.wait(self._busy_interval if self._applied else self._interval)


class HeadWatcher:
    """One poll of the store's head per process, for all its runners: a runner whose model is behind is woken, the
    others stay asleep (five models polling each on their own cost ten queries per interval, idle or not).

    With ``by_topic``, the watcher also asks which topics arrived since the runners it would wake last saw the
    store (one small query while they are close behind, at most ``TOPIC_WINDOW`` events), and wakes only the models
    that subscribe to one of them; the others are current up to the head as they are, and their in-process waiters
    go on at once. Under token traffic that spares the management models (members, clients, webhooks) a pass of
    three queries every interval in every API process. Their positions are then written only by their own
    once-a-second pass, so models whose waiters read their progress from another process must not be watched by
    topic: the supervisor's models are not watched at all (their runners pass on their own: every 50 ms when idle,
    10 ms after a pass that applied events).
    """

    TOPIC_WINDOW = 50_000

    def __init__(self, recorder: Any, models: Sequence[ReadModel], interval: float = 0.05, *,
                 by_topic: bool = False) -> None:
        self._recorder = recorder
        self._models = tuple(models)
        self._interval = interval
        self._by_topic = by_topic and hasattr(recorder, "select_topics")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="projection-head", daemon=True)

    def start(self) -> None:
        """Starts polling in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stops polling."""
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        failures = FailureStreak("reading the event store's head")
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception as exc:
                failures.failed(exc)
                self._stop.wait(0.5)
                continue
            failures.succeeded()
            self._stop.wait(self._interval)

    def poll(self) -> None:
        """Wakes the runners of the models that are behind the head (and, by topic, have something to apply)."""
        head = self._recorder.max_notification_id() or 0
        behind = [model for model in self._models if head > model.seen]
        if not behind:
            return
        start = min(model.seen for model in behind)
        arrived = self._recorder.select_topics(start, head) if self._by_topic and head - start <= \
            self.TOPIC_WINDOW else None
        for model in behind:
            if arrived is None or not model.topics or not arrived.isdisjoint(model.topics):
                model.wake.set()
            else:
                model.observe(head)  # nothing of its own up to the head: it is current there

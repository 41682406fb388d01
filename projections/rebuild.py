"""Rebuilding a read model beside the live one, then swapping it in.

A rebuild replays the whole store (``keyledger projections rebuild NAME``), minutes on a large one. It used to empty
the live tables and replay into them holding the model's lock throughout: readers kept the old content (MVCC), but
the live runners waited on the lock, so every read that waits for the model to catch up (read-your-writes: a
listing after a write, a bulk or family revocation selecting on the token lookup) answered 503 for the whole
rebuild. Now, in ONE transaction (a crash or an error leaves the live model as it was, and nothing behind):

1. the model's rebuilt tables are created in a schema of the rebuild's own (``kl_rebuild_...``), with their indexes,
   row-level security policies and grants, by a private copy of the model whose ``table`` names them there;
2. the store is replayed into them without the model's lock, up to the position the live runners had committed,
   then again up to where they got meanwhile, until few events are left (or ``CATCH_UP_ROUNDS`` passes); the live
   runners keep applying to the live tables meanwhile, and reads keep answering from them;
3. holding the model's lock (the runners wait, for the last short stretch only), the rest up to the store's head as
   then read is replayed; then the live tables are locked, each dropped and its rebuilt one moved into its place,
   and the position set. Readers queue behind that lock, so it is waited for ``SWAP_LOCK_WAIT_MS`` at most (the
   busiest table locked last): if another transaction holds a live table longer, the attempt is rolled back to
   before the model's lock, the runners go on, and after a pause the rebuild closes on them again and tries anew,
   up to ``SWAP_ATTEMPTS`` times, then gives up (``TablesInUse``) with the live model as it was. An attempt is not
   even begun (its last stretch replayed for nothing) while a transaction that has run for over a second holds a
   live table (an audit export, ``pg_dump``); one that an autovacuum holds waits past ``deadlock_timeout``, which
   is what makes PostgreSQL cancel the autovacuum. The swap also takes the migration lock
   (``projections.ddl.MIGRATION_LOCK_KEY``), so a process starting meanwhile does not run its migration's
   statements on a table being swapped. Nothing is reported (no output that could block) under the model's lock.

Tables a model writes but does not rebuild (the webhook outbox's delivery history, its pruning horizon) stay where
they are, and the copy writes them there: deterministic ids make that idempotent. Replaying without the lock only up
to positions the live runners had committed means their rows are already there, so the rebuild never waits on a
row a live runner is inserting (which, holding the lock, would wait on the rebuild: a deadlock). What else writes
those tables outside the runners (the outbox's pruning) holds the model's rebuild lock (``ReadModel.lock_rebuilds``)
exclusively, and skips its run while a rebuild holds it shared. One rebuild of a model runs at a time: a second
is refused at once (``RebuildRunning``), rather than replaying the whole store to replace the first one's result and,
writing the same rows of those tables, deadlock with it.

The rebuild's role needs to create a schema in the database and to own the model's tables (the role that ran the
migrations does). The swapped-in tables have what the model's statements give them; settings or indexes added by
hand to the live tables are not carried over.
"""

import contextlib
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from psycopg import Cursor, errors
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier, Literal

from projections.ddl import MIGRATION_LOCK_KEY

if TYPE_CHECKING:  # the model's module imports this one
    from projections.base import ReadModel

Page = tuple[Sequence[Any], int, int]
Pages = Callable[[int, int | None], Iterable[Page]]

REBUILD_IDLE_LIMIT = "10min"  # as the audit ledger's exports (``AuditView._confine``)
CATCH_UP_ROUNDS = 5  # unlocked passes after the first, at most, to close on the live runners
CLOSE_ENOUGH = 1000  # notifications left to the locked stretch, at most, that end the unlocked passes
SWAP_LOCK_WAIT_MS = 250  # each attempt's wait for the live tables: readers queue behind it that long at most
AUTOVACUUM_MARGIN_MS = 500  # waited beyond ``deadlock_timeout`` when an autovacuum holds a live table
SWAP_ATTEMPTS = 30  # about a minute of pauses in all
SWAP_PAUSE = (0.1, 2.0)  # seconds between attempts: doubling from the first, up to the second
SWAPPED_IDLE_LIMIT = "5s"  # how long the transaction may idle once it holds the live tables
PREPARING = "creating the rebuilt tables beside the live ones"
LOCKING = "waiting for the model's lock (its runners' batch in progress)"
SWAPPING = "swapping the rebuilt tables in"
RETRYING = "the live tables were in use: trying again after a pause"
REPLAYING = "replaying"
COMMITTED = "committed"
_RELEASED = (errors.LockNotAvailable, errors.QueryCanceled, errors.DeadlockDetected)
# Who holds a lock on the model's live tables in this database, besides this session and the model's runners.
_HOLDERS = (
    "SELECT coalesce(bool_or(a.usesysid IS NULL AND l.mode = 'ShareUpdateExclusiveLock'), false) AS autovacuum, "
    "coalesce(bool_or(a.usesysid IS NOT NULL AND a.xact_start < clock_timestamp() - interval '1 second'), false) "
    "AS long, (SELECT setting::int FROM pg_settings WHERE name = 'deadlock_timeout') AS deadlock_ms "
    "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.granted AND l.locktype = 'relation' "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND l.pid <> pg_backend_pid() AND l.relation IN (SELECT to_regclass(t) FROM unnest(%(tables)s::text[]) t) "
    "AND l.pid NOT IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = %(hi)s::oid "
    "AND objid = %(lo)s::oid AND objsubid = 1)")


class TablesInUse(RuntimeError):
    """The live tables stayed in use by other transactions through every attempt to swap: nothing changed."""


class RebuildRunning(RuntimeError):
    """Another rebuild of the model is in progress: nothing changed."""


@dataclass(frozen=True, slots=True)
class RebuildProgress:
    """Where a rebuild is: its phase and, while replaying, the position reached of the head that pass replays to."""

    phase: str
    position: int = 0
    head: int = 0


def shadow_copy(model: "ReadModel", schema: str, *, everything: bool) -> "ReadModel":
    """A private copy of ``model`` whose rebuilt tables (``everything``: all the tables it names) are in ``schema``.

    Set before ``__init__`` runs: models render their statements there.
    """
    copy = object.__new__(type(model))
    # Class-level settings the live model overrides (a batch limit, say) apply to the copy too.
    for name, value in vars(model).items():
        if not name.startswith("_") and hasattr(type(model), name):
            setattr(copy, name, value)
    copy.shadow_schema, copy.shadow_everything = schema, everything
    type(model).__init__(copy, model.datastore, tracking_table_name=model.tracking_table_name)
    return copy


def rebuild_beside(model: "ReadModel", pages: Pages | Iterable[Page],
                   progress: Callable[[RebuildProgress], None] | None = None, *, attempts: int | None = None) -> int:
    """Rebuilds ``model`` as the module docstring says; returns its new position.

    ``attempts``: how many times the swap is tried before ``TablesInUse`` (None: ``SWAP_ATTEMPTS``); an operator
    who would rather try later than wait about a minute for a long reader asks for fewer.

    ``pages(start, stop)``: the model's pages after ``start`` up to ``stop`` (None: the store's head, read once).
    A plain iterable of pages (tests, or emptying the model) is replayed as it comes, then swapped in.
    """
    if attempts is not None and attempts < 1:
        raise ValueError(f"a rebuild needs at least one attempt to swap, not {attempts}")
    report = progress or (lambda _: None)
    schema = f"kl_rebuild_{secrets.token_hex(6)}_{model.name}"[:63]
    with model.datastore.transaction(commit=True) as curs:
        # The transaction idles while the next page is read on another connection; on a large store a page of a
        # model with few events of its own takes longer to find than the pool's 10 s limit. Still bounded, so a
        # rebuilding process that stops (suspended, its output blocked) does not hold the model's lock for ever.
        curs.execute(SQL("SET LOCAL idle_in_transaction_session_timeout = {}").format(Literal(REBUILD_IDLE_LIMIT)))
        if model.keyed_writes:  # as ``ReadModel.lock`` sets for the live runners: the new tables have no statistics
            curs.execute("SELECT set_config('enable_seqscan', 'off', true)")
        model.lock_rebuilds(curs, exclusive=False)
        curs.execute("SELECT pg_try_advisory_xact_lock(%s) AS alone", (model.lock_key(" rebuilding"),))
        if not (row := curs.fetchone()) or not row["alone"]:
            raise RebuildRunning(f"read model {model.name}: another rebuild of it is in progress; nothing was changed")
        report(RebuildProgress(PREPARING))
        replay = _Replay(_prepare(model, curs, schema), curs, report)
        if callable(pages):
            last = replay.close_on(model, pages, replay.pages(pages(0, model.position())))
        else:
            last = replay.pages(pages)
        replay.analyze(model.tables)
        held: list[RebuildProgress] = []  # what happens holding the model's lock is told after the commit
        tries = SWAP_ATTEMPTS if attempts is None else attempts
        for attempt in range(tries):
            if attempt:
                report(RebuildProgress(RETRYING))
                time.sleep(min(SWAP_PAUSE[1], SWAP_PAUSE[0] * 2 ** (attempt - 1)))
                last = replay.close_on(model, pages, last) if callable(pages) else last
            wait_ms = _lock_wait(curs, model)
            if wait_ms is None:
                continue
            report(RebuildProgress(LOCKING))
            held.clear()
            swapped = _swap_attempt(model, replace(replay, report=held.append), pages, last=last, schema=schema,
                                    wait_ms=wait_ms)
            if swapped is not None:
                break
        else:
            raise TablesInUse(f"read model {model.name}: its tables stayed in use by other transactions through "
                              f"{tries} attempt(s) to swap the rebuilt ones in; nothing was changed")
    with contextlib.suppress(OSError):  # committed: a closed output must not make it look failed
        for step in [*held, RebuildProgress(COMMITTED, position=swapped, head=swapped)]:
            report(step)
    return swapped


def _lock_wait(curs: Cursor[DictRow], model: "ReadModel") -> int | None:
    """Milliseconds the next attempt may wait for the live tables, or None to skip it while a transaction that has
    run for over a second holds one (its last stretch would be replayed, then rolled back, for nothing). An
    autovacuum holding one is cancelled by PostgreSQL only for a lock waited on past ``deadlock_timeout``.

    The model's own runners (holding or awaiting its lock) do not count: the attempt's lock waits them out. Other
    roles' sessions show their transaction's start only to a role with ``pg_read_all_stats`` (or a superuser): for
    the rebuild's own role they are not seen as long, and their attempts simply fail. An autovacuum (a process of
    no role holding the lock a vacuum takes) is recognised whatever the role.
    """
    key = model.lock_key() & 0xFFFF_FFFF_FFFF_FFFF  # as pg_locks shows an advisory lock's bigint key
    curs.execute(_HOLDERS, {"tables": [model.table(name).as_string(None) for name in model.tables],
                            "hi": key >> 32, "lo": key & 0xFFFF_FFFF})
    row = curs.fetchone()
    assert row is not None  # an aggregate always has its row
    if row["long"]:
        return None
    return int(row["deadlock_ms"]) + AUTOVACUUM_MARGIN_MS if row["autovacuum"] else SWAP_LOCK_WAIT_MS


def _swap_attempt(model: "ReadModel", replay: "_Replay", pages: Pages | Iterable[Page], *, last: int, schema: str,
                  wait_ms: int) -> int | None:
    """Under the model's lock: the rest of the store, then the swap; returns the new position, or None (rolled back
    to before the lock, which lets the runners go on) when the live tables or the migration lock were not had
    within ``wait_ms``."""
    curs = replay.curs
    curs.execute("SAVEPOINT keyledger_swap")
    model.lock(curs)
    if callable(pages):
        last = replay.pages(pages(last, None), last)
    replay.report(RebuildProgress(SWAPPING))
    for setting in ("lock_timeout", "statement_timeout"):  # the statement's: a lock timeout is per table
        curs.execute(SQL("SET LOCAL {} = {}").format(Identifier(setting), Literal(f"{wait_ms}ms")))
    tables = SQL(", ").join(model.table(name) for name in reversed(model.tables))  # the busiest last
    started = time.monotonic()
    try:
        curs.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
        started = time.monotonic()
        curs.execute(SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(tables))
    except _RELEASED as exc:
        # A statement cancelled before its limit ran out was cancelled by an operator (``pg_cancel_backend``): the
        # rebuild stops. Judged by the time waited, not the message, which the server may send in any language.
        if isinstance(exc, errors.QueryCanceled) and time.monotonic() - started < wait_ms / 1000:
            raise
        curs.execute("ROLLBACK TO SAVEPOINT keyledger_swap")
        curs.execute("RELEASE SAVEPOINT keyledger_swap")
        return None
    curs.execute(SQL("SET LOCAL idle_in_transaction_session_timeout = {}").format(Literal(SWAPPED_IDLE_LIMIT)))
    curs.execute("SET LOCAL lock_timeout TO DEFAULT")
    curs.execute("SET LOCAL statement_timeout TO DEFAULT")
    _swap(model, curs, schema)
    model.tracking_reset(curs, last)
    return last


def _prepare(model: "ReadModel", curs: Cursor[DictRow], schema: str) -> "ReadModel":
    """Creates the rebuild's schema and the model's tables in it; returns the copy that replays into them.

    Every table the model creates is created there (those it does not rebuild go with the schema), so nothing of
    the live model is touched, let alone locked, before the swap.
    """
    curs.execute(SQL("CREATE SCHEMA {}").format(Identifier(schema)))
    creator = shadow_copy(model, schema, everything=True)
    for statement in [*creator.create_statements(), *creator.security_statements()]:
        curs.execute(statement)
    return shadow_copy(model, schema, everything=False)


@dataclass(frozen=True, slots=True)
class _Replay:
    """Replays pages into the rebuild's copy of the model, inside the rebuild's transaction."""

    shadow: "ReadModel"
    curs: Cursor[DictRow]
    report: Callable[[RebuildProgress], None]

    def pages(self, pages: Iterable[Page], last: int = 0) -> int:
        """Applies ``pages``; returns the position reached (``last`` if there were none)."""
        for events, last_id, head in pages:
            self.shadow.apply_events(self.curs, events)
            last = last_id
            self.report(RebuildProgress(REPLAYING, position=last, head=max(head, last)))
        return last

    def analyze(self, tables: Iterable[str]) -> None:
        """Statistics for the planner, before readers and runners use the tables: for those with rows only. An
        empty table left unanalyzed is planned as a new one (a few pages assumed); analyzed, as empty for good, and a
        plan a connection keeps from then on would read it whole once it has grown (``ReadModel.keyed_writes``)."""
        for name in tables:
            table = self.shadow.table(name)
            self.curs.execute(SQL("SELECT EXISTS (SELECT FROM {}) AS rows").format(table))
            row = self.curs.fetchone()
            if row is not None and row["rows"]:
                self.curs.execute(SQL("ANALYZE {}").format(table))

    def close_on(self, model: "ReadModel", pages: Pages, last: int) -> int:
        """Replays, without the lock, up to where the live runners got while the previous pass ran, until few events
        are left for the locked stretch."""
        for _ in range(CATCH_UP_ROUNDS):
            live = model.position()
            if live - last <= CLOSE_ENOUGH:
                break
            last = self.pages(pages(last, live), last)
        return last


def _swap(model: "ReadModel", curs: Cursor[DictRow], schema: str) -> None:
    """Drops each live table the model rebuilds and moves its rebuilt one (indexes, policies and grants with it)
    into its place, then drops the rebuild's schema and what is left in it."""
    live = Identifier(str(model.datastore.schema))
    for name in model.tables:
        curs.execute(SQL("DROP TABLE IF EXISTS {}").format(model.table(name)))
        curs.execute(SQL("ALTER TABLE {}.{} SET SCHEMA {}").format(Identifier(schema), Identifier(name), live))
    curs.execute(SQL("DROP SCHEMA {} CASCADE").format(Identifier(schema)))

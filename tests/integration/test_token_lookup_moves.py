"""Where the token lookup keeps a row, on real PostgreSQL.

An ended (revoked, used) token's row leaves the hot table once the model applies an event later than the token's
expiry; where a row ends up depends on the events only, never on how they were batched; ending a token is a
heap-only update. The events are built here with chosen timestamps and applied straight to the model, as its runner
would (no runner is running on this database).
"""

import dataclasses
import random
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any
from uuid import UUID, uuid4

import pytest
from psycopg.sql import SQL

from domain.token import Token, TokenKind
from infrastructure.bootstrap import Container
from projections.token_expiry import HORIZON_TABLE
from projections.token_lookup import REVOKED_TOKENS_TABLE, TokenLookupView, TokenQuery

pytestmark = pytest.mark.integration

HOUR = timedelta(hours=1)
PROJECT = UUID(int=42)


@pytest.fixture
def view(quiet_container: Container) -> Iterator[TokenLookupView]:
    """The token lookup model of a database no one else writes to, emptied before and after each test."""
    model: TokenLookupView = quiet_container.lookup
    model.rebuild([])
    yield model
    model.rebuild([])


def past() -> datetime:
    """A start far enough back that every event of a test, hours later, is still in the past (the horizon never
    passes the database's clock)."""
    return datetime.now(UTC) - 8 * HOUR


def token(now: datetime, *, expires_in: timedelta, kind: TokenKind = TokenKind.ACCESS,
          family_id: UUID | None = None) -> Token:
    return Token(token_id=uuid4(), kind=kind, project_id=PROJECT, client_id="client", user_id=None, scope="read",
                 grant_type="client_credentials", issued_at=now, expires_at=now + expires_in, family_id=family_id,
                 parent_id=None, actor="client:client", family_expires_at=None, value_hash=None, account_version=None)


def at(event: Any, when: datetime) -> Any:
    """``event`` as if decided at ``when``."""
    return dataclasses.replace(event, timestamp=when)


def issued(now: datetime, *, expires_in: timedelta, when: datetime | None = None, **fields: Any) -> tuple[Token, Any]:
    """A token and its TokenIssued (decided at ``when``, by default ``now``)."""
    made = token(now, expires_in=expires_in, **fields)
    (event,) = made.collect_events()
    return made, at(event, when or now)


def revoked(made: Token, when: datetime) -> Any:
    made.revoke(reason="test", actor="system")
    (event,) = made.collect_events()
    return at(event, when)


def apply(view: TokenLookupView, events: Sequence[Any]) -> None:
    """One batch, in one transaction, as the runner applies it."""
    with view.datastore.transaction(commit=True) as curs:
        view.apply_events(curs, events)


def rows(view: TokenLookupView, table: str) -> list[tuple[Any, ...]]:
    with view.datastore.get_connection() as conn, conn.cursor() as curs:
        curs.execute(SQL("SELECT * FROM {} ORDER BY token_id").format(view.table(table)))
        return [tuple(row.values()) for row in curs.fetchall()]


def place(view: TokenLookupView, token_id: UUID) -> dict[str, str]:
    """{table: status} of the token's rows."""
    found = {}
    for table in ("token_lookup", "token_expired"):
        with view.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(SQL("SELECT status FROM {} WHERE token_id = %s").format(view.table(table)), (token_id,))
            row = curs.fetchone()
            if row is not None:
                found[table] = row["status"]
    return found


def test_an_ended_token_leaves_the_hot_table_once_an_event_after_its_expiry_is_applied(
        view: TokenLookupView) -> None:
    now = past()
    ended, ended_issued = issued(now, expires_in=HOUR)
    active, active_issued = issued(now, expires_in=HOUR)
    apply(view, [ended_issued, active_issued])
    apply(view, [revoked(ended, now + timedelta(minutes=1))])
    assert place(view, ended.id) == {"token_lookup": "revoked"}  # not past its expiry yet

    apply(view, [issued(now, expires_in=HOUR, when=now + HOUR - timedelta(seconds=1))[1]])
    assert place(view, ended.id) == {"token_lookup": "revoked"}  # the events have not reached its expiry

    apply(view, [issued(now, expires_in=HOUR, when=now + 2 * HOUR)[1]])
    assert place(view, ended.id) == {"token_expired": "revoked"}
    assert place(view, active.id) == {"token_lookup": "active"}  # an active token's expiry is the sweep's to record
    moved = view.get(ended.id)
    assert moved is not None and moved.status == "revoked" and moved.ended_reason == "test"
    listed = view.page(TokenQuery(project_id=PROJECT, now=now, limit=10, status="revoked"))
    assert [row.token_id for row in listed] == [ended.id]


def test_a_token_ended_after_the_horizon_passed_its_expiry_moves_in_the_same_batch(view: TokenLookupView) -> None:
    now = past()
    late, late_issued = issued(now, expires_in=timedelta(minutes=1))
    apply(view, [late_issued, issued(now, expires_in=HOUR, when=now + 2 * HOUR)[1]])
    # Decided before its expiry, applied after an event two hours later (commit order is not decision order).
    apply(view, [revoked(late, now + timedelta(seconds=30))])
    assert place(view, late.id) == {"token_expired": "revoked"}


def test_a_used_token_already_moved_is_revoked_where_it_is(view: TokenLookupView) -> None:
    now = past()
    events = _family_history(now)
    apply(view, events[:-1])
    used = events[1].originator_id
    assert place(view, used) == {"token_expired": "used"}
    apply(view, events[-1:])
    assert place(view, used) == {"token_expired": "revoked"}


def test_where_rows_end_up_does_not_depend_on_the_batches(view: TokenLookupView) -> None:
    now = past()
    events = _family_history(now) + _mixed_history(now)
    apply(view, events)
    together = (rows(view, "token_lookup"), rows(view, "token_expired"))
    assert together[1], "the history moves rows: the comparison must cover both tables"
    rng = random.Random(7)
    for split in ([[e] for e in events], _random_batches(events, rng), _random_batches(events, rng)):
        view.rebuild([])
        for batch in split:
            apply(view, batch)
        assert (rows(view, "token_lookup"), rows(view, "token_expired")) == together


def test_a_moved_tokens_revocation_list_entry_is_pruned_after_its_expiry(view: TokenLookupView) -> None:
    now = past()
    ended, ended_issued = issued(now, expires_in=HOUR)
    apply(view, [ended_issued, revoked(ended, now), issued(now, expires_in=HOUR, when=now + 2 * HOUR)[1]])
    assert place(view, ended.id) == {"token_expired": "revoked"}
    with view.datastore.transaction(commit=True) as curs:
        curs.execute(SQL("INSERT INTO {} (token_id) VALUES (%s)").format(view.table(REVOKED_TOKENS_TABLE)),
                     (ended.id,))
    # By the database's clock: expired 7 hours ago (``past``), so kept for a margin of 8 hours, pruned for 6.
    assert view.prune_written_through(timedelta(hours=8), 10) == 0
    assert view.prune_written_through(timedelta(hours=6), 10) == 1


def test_the_first_batch_moves_rows_ended_before_there_was_a_horizon(view: TokenLookupView) -> None:
    """A database from before the horizon (an upgrade) holds ended rows long past their expiry in the hot table:
    the first batch applied moves them all."""
    now = past()
    old, old_issued = issued(now - 3 * HOUR, expires_in=HOUR)
    apply(view, [old_issued, revoked(old, now - 3 * HOUR)])
    with view.datastore.transaction(commit=True) as curs:
        curs.execute(SQL("DELETE FROM {}").format(view.table(HORIZON_TABLE)))
        curs.execute(SQL("INSERT INTO {} SELECT * FROM {} WHERE token_id = %s").format(
            view.table("token_lookup"), view.table("token_expired")), (old.id,))
        curs.execute(SQL("DELETE FROM {} WHERE token_id = %s").format(view.table("token_expired")), (old.id,))
    assert place(view, old.id) == {"token_lookup": "revoked"}
    apply(view, [issued(now, expires_in=HOUR)[1]])
    assert place(view, old.id) == {"token_expired": "revoked"}


def test_an_event_stamped_in_the_future_moves_nothing_that_is_live_by_the_databases_clock(
        view: TokenLookupView) -> None:
    """A host whose clock runs ahead stamps its events in the future: the horizon stops at the database's clock, so
    a revoked token that is still live keeps its row (and its status) in the hot table that every request reads."""
    now = datetime.now(UTC)
    live, live_issued = issued(now, expires_in=HOUR)
    apply(view, [live_issued, revoked(live, now), issued(now, expires_in=HOUR, when=now + 3 * HOUR)[1]])
    assert place(view, live.id) == {"token_lookup": "revoked"}


def test_a_large_backlog_moves_a_limited_number_of_rows_per_batch_and_ends_the_same(
        view: TokenLookupView, monkeypatch: pytest.MonkeyPatch) -> None:
    now = past()
    events = []
    for i in range(10):
        made, made_issued = issued(now, expires_in=timedelta(minutes=10 * (i + 1)))
        events += [made_issued, revoked(made, now)]
    events.append(issued(now, expires_in=HOUR, when=now + 3 * HOUR)[1])  # passes every expiry at once
    apply(view, events)
    unlimited = (rows(view, "token_lookup"), rows(view, "token_expired"))
    view.rebuild([])
    monkeypatch.setattr(view, "move_limit", 2)
    moved = [0]
    for event in events:
        apply(view, [event])
        moved.append(len(rows(view, "token_expired")))
    latest = max(event.timestamp for event in events)
    while rows(view, "token_expired") != unlimited[1] and len(moved) < 100:
        apply(view, [issued(now, expires_in=9 * HOUR, when=latest)[1]])  # later batches carry on, no later time
        moved.append(len(rows(view, "token_expired")))
    assert rows(view, "token_expired") == unlimited[1]
    assert max(b - a for a, b in pairwise(moved)) <= 2 < len(unlimited[1])


def test_rows_sharing_an_expiry_across_the_limit_all_move(view: TokenLookupView,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The limit may cut between rows of one expiry instant: the horizon stops at that instant, not past it."""
    now = past()
    made = [issued(now, expires_in=HOUR) for _ in range(3)]
    apply(view, [event for _, event in made] + [revoked(token, now) for token, _ in made])
    monkeypatch.setattr(view, "move_limit", 2)
    later = now + 2 * HOUR
    apply(view, [issued(now, expires_in=9 * HOUR, when=later)[1]])
    assert len(rows(view, "token_expired")) == 2
    apply(view, [issued(now, expires_in=9 * HOUR, when=later)[1]])
    assert {place(view, token.id)["token_expired"] for token, _ in made} == {"revoked"}


def test_ending_a_token_adds_no_index_entry(view: TokenLookupView) -> None:
    """Revoking and using up update the row heap-only (HOT): no index reads what they change, and the page has
    room for the new version. PostgreSQL counts the transaction's HOT updates itself."""
    now = past()
    made = [issued(now, expires_in=HOUR, kind=TokenKind.REFRESH, family_id=uuid4()) for _ in range(200)]
    apply(view, [event for _, event in made])
    first, second = made[3][0], made[4][0]
    second.refresh(refresh_id=uuid4(), access_id=uuid4(), now=now, actor="user:someone")
    events = [revoked(first, now), at(second.collect_events()[0], now)]
    with view.datastore.transaction(commit=False) as curs:
        before = _updates(view, curs)
        view.apply_events(curs, events)
        after = _updates(view, curs)
    assert (after[0] - before[0], after[1] - before[1]) == (2, 2)


def _updates(view: TokenLookupView, curs: Any) -> tuple[int, int]:
    """Updates and HOT updates of the hot table this connection has counted and not yet reported (PostgreSQL 15
    keeps earlier transactions' counts there too: compare two readings)."""
    curs.execute("SELECT pg_stat_get_xact_tuples_updated(%(t)s::regclass) AS updated, "
                 "pg_stat_get_xact_tuples_hot_updated(%(t)s::regclass) AS hot",
                 {"t": view.table("token_lookup").as_string(None)})
    row = curs.fetchone()
    return row["updated"], row["hot"]


def _family_history(now: datetime) -> list[Any]:
    """A refresh token used at once, an event two hours later (it moves, ``used``), then its family revoked."""
    family = uuid4()
    refresh, refresh_issued = issued(now, expires_in=HOUR, kind=TokenKind.REFRESH, family_id=family)
    refresh.refresh(refresh_id=uuid4(), access_id=uuid4(), now=now, actor="user:someone")
    (used,) = refresh.collect_events()
    later = issued(now, expires_in=3 * HOUR, when=now + 2 * HOUR)[1]
    return [refresh_issued, at(used, now), later, revoked(refresh, now + 2 * HOUR + timedelta(seconds=1))]


def _mixed_history(now: datetime) -> list[Any]:
    """Tokens of several lifetimes, some revoked early, some late, time moving forward in steps."""
    events: list[Any] = []
    made = []
    for i in range(12):
        one, event = issued(now, expires_in=timedelta(minutes=20 * (i + 1)), when=now + timedelta(minutes=i))
        made.append(one)
        events.append(event)
    for i, one in enumerate(made):
        if i % 3 != 2:
            events.append(revoked(one, now + timedelta(minutes=15 * i)))
        events.append(issued(now, expires_in=8 * HOUR, when=now + timedelta(minutes=16 * i))[1])
    return events


def _random_batches(events: Sequence[Any], rng: random.Random) -> list[list[Any]]:
    cuts = sorted(rng.sample(range(1, len(events)), k=min(6, len(events) - 1)))
    return [list(events[a:b]) for a, b in zip([0, *cuts], [*cuts, len(events)], strict=True)]


def test_a_batch_reads_the_hot_table_by_index_under_plans_made_while_it_was_small(view: TokenLookupView) -> None:
    """A prepared statement keeps its generic plan for the connection's life; one made while the table was small may
    read it whole. A batch that ends tokens must still reach the hot table's rows by key once it is large
    (``ReadModel.keyed_writes``), here with every plan generic, made and kept while the table was all but empty."""
    now = past()
    with view.datastore.get_connection() as conn:
        threshold, conn.prepare_threshold = conn.prepare_threshold, 0  # every statement prepared at once
        conn.execute("SET plan_cache_mode = force_generic_plan")
        try:
            first, first_issued = issued(now, expires_in=HOUR)
            _apply_on(conn, view, [first_issued, revoked(first, now)])  # plans made on an all but empty table
            made = [issued(now, expires_in=HOUR) for _ in range(3000)]
            _apply_on(conn, view, [event for _, event in made])
            with conn.transaction(), conn.cursor() as curs:
                view.lock(curs)
                before = _rows_read(view, curs)
                view.apply_events(curs, [revoked(one, now + timedelta(minutes=1)) for one, _ in made[:5]])
                after = _rows_read(view, curs)
        finally:  # the connection goes back to the pool as it came
            conn.execute("RESET plan_cache_mode")
            conn.execute("DEALLOCATE ALL")
            conn.prepare_threshold = threshold
    assert after - before <= 20  # the five rows by key (a scan, or a walk of an index, would read 3,001)
    assert {place(view, one.id)["token_lookup"] for one, _ in made[:6]} == {"revoked", "active"}


def _apply_on(conn: Any, view: TokenLookupView, events: Sequence[Any]) -> None:
    """One batch on ``conn``, as the runner applies it (under the model's lock)."""
    with conn.transaction(), conn.cursor() as curs:
        view.lock(curs)
        view.apply_events(curs, events)


def _rows_read(view: TokenLookupView, curs: Any) -> int:
    """Rows of the hot table this connection read by sequential scans, plus entries read from its indexes: what it
    counted and has not reported yet (nothing is reported inside a transaction)."""
    curs.execute("SELECT pg_stat_get_xact_tuples_returned(x.t) + coalesce((SELECT sum(pg_stat_get_xact_tuples_returned("
                 "i.indexrelid)) FROM pg_index i WHERE i.indrelid = x.t), 0) AS n FROM (SELECT %s::regclass AS t) x",
                 (view.table("token_lookup").as_string(None),))
    return int(curs.fetchone()["n"])


def test_a_batch_of_interleaved_refreshes_applies_each_event_type_in_one_statement(view: TokenLookupView) -> None:
    """Each refresh records TokenRefreshed and two TokenIssued; a batch of many refreshes holds them interleaved.
    The batch still costs one statement per event type, and ends as applying the events one by one would."""
    now = past()
    family = uuid4()
    parents = [issued(now, expires_in=HOUR, kind=TokenKind.REFRESH, family_id=family) for _ in range(20)]
    apply(view, [event for _, event in parents])
    batch: list[Any] = []
    children = []
    for parent, _ in parents:
        child, child_issued = issued(now, expires_in=HOUR, kind=TokenKind.REFRESH, family_id=family)
        access, access_issued = issued(now, expires_in=HOUR, family_id=family)
        parent.refresh(refresh_id=child.id, access_id=access.id, now=now, actor="user:someone")
        batch += [at(parent.collect_events()[0], now), child_issued, access_issued]
        children += [child, access]
    with view.datastore.transaction(commit=True) as curs:
        counting = _CountingCursor(curs)
        view.apply_events(counting, batch)  # type: ignore[arg-type]
    assert counting.statements <= 4  # the issued rows, the used ones, the move, the clients' last use
    assert {place(view, parent.id)["token_lookup"] for parent, _ in parents} == {"used"}
    assert {place(view, child.id)["token_lookup"] for child in children} == {"active"}


class _CountingCursor:
    """A cursor that counts the statements run through it."""

    def __init__(self, curs: Any) -> None:
        self._curs, self.statements = curs, 0

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        self.statements += 1
        return self._curs.execute(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._curs, name)

"""The event store's statements keep cheap plans: the guarded insert's check reads the guard streams through the
events table's key however small the store was when a session first ran it, and no read of the store is planned in
parallel or compiled just in time.

PL/pgSQL keeps a generic plan of the check for the session's life. Had it been a scan, planned while the events
table held a page or two (a new deployment's first token requests), every client_credentials batch would go on
reading the whole store, under the store's lock, as the store grew (what happened to two prepared statements in
session 12). ``max(originator_version)`` of one stream is an index lookup even on a one-page table; this keeps it so.
"""

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import StoredEvent
from psycopg.rows import dict_row

from domain.project import Project
from infrastructure.bootstrap import Container

pytestmark = pytest.mark.integration

GROWN = 6_000


def stored(container: Container, aggregate: Any) -> list[StoredEvent]:
    return [container.app.mapper.to_stored_event(e) for e in aggregate.collect_events()]


def new_project() -> Project:
    owner = uuid.uuid4()
    return Project(project_id=uuid.uuid4(), name="p", owner_id=owner, actor=f"user:{owner}")


@pytest.fixture
def session(quiet_container: Container) -> Iterator[psycopg.Connection[Any]]:
    """One database session of its own: PL/pgSQL plans are cached per session."""
    pool = quiet_container.app.recorder.datastore.pool
    with psycopg.connect(pool.conninfo, **{**pool.kwargs, "autocommit": True, "row_factory": dict_row}) as conn:
        yield conn


def guarded_insert(container: Container, conn: psycopg.Connection[Any], guard: tuple[uuid.UUID, int]) -> None:
    recorder = container.app.recorder
    events = stored(container, new_project())
    conn.execute(recorder.guarded_insert_call, (
        [e.originator_id for e in events], [e.originator_version for e in events], [e.topic for e in events],
        [e.state for e in events], [guard[0]], [guard[1]]), prepare=True)


def test_the_guard_check_stays_an_index_lookup_after_the_store_grows(quiet_container: Container,
                                                                     session: psycopg.Connection[Any]) -> None:
    recorder = quiet_container.app.recorder
    guard_project = new_project()
    recorder.insert_events(stored(quiet_container, guard_project))
    guard = (guard_project.id, 1)
    for _ in range(8):  # more than PL/pgSQL's five custom plans: the session now keeps a generic one
        guarded_insert(quiet_container, session, guard)
    for _ in range(GROWN // 500):
        recorder.insert_events([e for _ in range(500) for e in stored(quiet_container, new_project())])
    table = f"{recorder.datastore.schema}.{recorder.events_table_name}"

    with session.transaction(force_rollback=True):
        def reads() -> int:
            row = session.execute("SELECT pg_stat_get_xact_tuples_returned(%s::regclass) AS seq", (table,)).fetchone()
            assert row is not None
            return int(row["seq"])

        before = reads()
        guarded_insert(quiet_container, session, guard)
        assert reads() - before < 100  # a sequential scan would read every one of the >6,000 rows


@pytest.mark.parametrize("statement", ["select_many_and_versions_statement", "select_many_statement",
                                       "select_versions_statement", "select_topics_statement"])
def test_no_read_of_the_store_is_planned_in_parallel_or_compiled_just_in_time(
        quiet_container: Container, session: psycopg.Connection[Any], statement: str) -> None:
    """A parallel plan forks its workers, and JIT compiles the statement, on every execution: on a store without
    statistics, past a hundred thousand events, the revocation batch's read did the first 140 times a second, and past
    400,000 it spent 10 ms compiling for 0.5 ms of reading. Both are made as cheap as they get here, so only the
    session's own settings (the pool's options, which ``session`` connects with) keep them out: without them the
    three reads by stream id are planned in parallel (``select_topics``, a short range of positions, is not), and
    every read is compiled where the server has JIT, as the control at the end shows.
    """
    for setting in ("parallel_setup_cost", "parallel_tuple_cost", "min_parallel_table_scan_size",
                    "min_parallel_index_scan_size", "jit_above_cost"):
        session.execute(f"SET {setting} = 0")
    session.execute("SET plan_cache_mode = force_generic_plan")  # what a prepared statement comes to use
    text = getattr(quiet_container.app.recorder, statement).replace("%b", "%s")
    arguments = text.count("%s")
    prepare = f"PREPARE probe AS {text.replace('%s', '${}').format(*range(1, arguments + 1))}"
    explain = f"EXPLAIN EXECUTE probe({', '.join(['NULL'] * arguments)})"
    session.execute(prepare)
    lines = [row["QUERY PLAN"] for row in session.execute(explain).fetchall()]
    assert not any("Gather" in line or "Parallel" in line or "JIT" in line for line in lines), "\n".join(lines)
    session.execute("SET jit = on")  # the control, where the server has JIT at all (the embedded one has none)
    if session.execute("SELECT pg_jit_available() AS available").fetchone()["available"]:
        session.execute("DEALLOCATE probe")  # planned again: JIT is decided with the plan
        session.execute(prepare)
        assert any("JIT" in row["QUERY PLAN"] for row in session.execute(explain).fetchall())

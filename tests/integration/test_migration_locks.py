"""Every process that starts migrates the schema again (``serve``, a worker, ``projections status``). Against a live
database that must take no lock on what already exists (``projections.ddl``): while a long transaction writes the
read models' tables and the store (a rebuild, a large deletion), a second migration neither waits for it nor makes
the requests behind it queue. A migration that has something to change on a table such a transaction holds gives up
after the lock timeout instead of holding the live system up."""

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from psycopg.sql import SQL, Identifier

from infrastructure.bootstrap import Container, Endpoints, build
from infrastructure.postgres import STORE_CONNINFO
from infrastructure.settings import Settings
from projections.token_lookup import REVOKED_TOKENS_TABLE

WAIT = 60.0  # seconds the holder keeps its locks at most: far beyond a migration that waits for no lock


@contextmanager
def tables_held(url: str, tables: list[str], mode: str = "ROW EXCLUSIVE") -> Iterator[None]:
    """A transaction holding ``mode`` on ``tables`` until the block ends: ROW EXCLUSIVE is what any writer holds,
    ACCESS SHARE what any reader (an export) holds."""
    with psycopg.connect(url) as holder:
        for table in tables:
            holder.execute(SQL("LOCK TABLE {} IN " + mode + " MODE").format(Identifier("public", table)))
        try:
            yield
        finally:
            holder.rollback()


def in_thread(action: object) -> tuple[threading.Event, list[BaseException]]:
    done, errors = threading.Event(), []

    def run() -> None:
        try:
            action()  # type: ignore[operator]
        except BaseException as exc:  # handed to the test
            errors.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    return done, errors


def every_table(container: Container) -> list[str]:
    recorder = container.app.recorder
    tables = [recorder.events_table_name, REVOKED_TOKENS_TABLE]
    for view in container.views.values():
        tables += [*view.tables, view.tracking_table_name]
    return tables


def database_url(container: Container) -> str:
    return str(container.app.env[STORE_CONNINFO])


def test_migrating_a_live_database_again_waits_for_no_lock(quiet_container: Container, redis_url: str,
                                                           settings: Settings) -> None:
    url = database_url(quiet_container)

    with tables_held(url, every_table(quiet_container)):
        done, errors = in_thread(lambda: build(settings, Endpoints(database_url=url, redis_url=redis_url),
                                               migrate=True).close())
        migrated_while_held = done.wait(WAIT)

    done.wait(WAIT)
    assert errors == []
    assert migrated_while_held


def test_a_migration_with_work_on_a_held_table_gives_up_after_the_lock_timeout(quiet_container: Container) -> None:
    members = quiet_container.members
    url = database_url(quiet_container)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP INDEX member_view_page_idx")  # as before a release that adds it

    with tables_held(url, list(members.tables)):
        done, errors = in_thread(members.create_table)
        gave_up_while_held = done.wait(WAIT)

    assert gave_up_while_held
    assert len(errors) == 1 and "lock timeout" in str(errors[0])
    members.create_table()  # once the transaction is over, the migration goes through
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT to_regclass('member_view_page_idx') IS NOT NULL").fetchone() == (True,)


@pytest.mark.parametrize("statement", ["CREATE INDEX IF NOT EXISTS t_idx ON \"public\".\"t\" (a)",
                                       "ALTER TABLE \"public\".\"t\" ENABLE ROW LEVEL SECURITY",
                                       "ALTER TABLE \"public\".\"t\" ADD COLUMN IF NOT EXISTS b int"])
def test_each_locking_statement_runs_once_then_is_skipped(quiet_container: Container, statement: str) -> None:
    from projections.ddl import if_missing  # noqa: PLC0415

    url = database_url(quiet_container)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS t (a int)")
        conn.execute(if_missing(SQL(statement)))  # type: ignore[arg-type]
        with tables_held(url, ["t"]):
            conn.execute("SET lock_timeout = '1s'")
            conn.execute(if_missing(SQL(statement)))  # type: ignore[arg-type]  # would time out if it locked
        conn.execute("DROP TABLE t")


def test_a_grant_already_given_does_not_write_the_tables_catalogue_row(quiet_container: Container) -> None:
    """Every start grants the tenant role its read access again. Given, the grant is skipped: it would write the
    table's ``pg_class`` row, and wait on (then fail against) a transaction that changed that row, such as a
    rebuild's swap dropping the table (here an uncommitted storage setting stands for it)."""
    from projections.ddl import if_missing  # noqa: PLC0415

    url = database_url(quiet_container)
    grant = SQL('GRANT SELECT ON "public"."t" TO "keyledger_tenant"')
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS t (a int)")
        conn.execute(if_missing(grant))  # type: ignore[arg-type]
        try:
            with psycopg.connect(url) as other:
                other.execute("ALTER TABLE t SET (fillfactor = 80)")  # the catalogue row, changed and uncommitted
                conn.execute("SET lock_timeout = '1s'")
                conn.execute(if_missing(grant))  # type: ignore[arg-type]  # would time out if it wrote the row
                other.rollback()
        finally:
            conn.execute("RESET lock_timeout")
            conn.execute("DROP TABLE t")


def test_a_superseded_index_is_dropped_once_no_reader_holds_its_table(quiet_container: Container) -> None:
    """The audit ledger's filtered indexes used to hold platform entries too; an older release's index is dropped
    by the next start, unless an export is reading the ledger: then it stays until a later start."""
    audit, url = quiet_container.audit, database_url(quiet_container)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE INDEX audit_token_idx ON audit (project_id, token_id, position) "
                     "WHERE token_id IS NOT NULL")

    with tables_held(url, ["audit"], mode="ACCESS SHARE"):
        done, errors = in_thread(audit.create_table)
        migrated_while_read = done.wait(WAIT)
    assert migrated_while_read and errors == []
    assert indexes(url, "audit") >= {"audit_token_idx"}  # left for a later start

    audit.create_table()
    filtered = indexes(url, "audit") - {"audit_pkey", "audit_project_idx"}
    assert "audit_token_idx" not in filtered
    with psycopg.connect(url) as conn:
        definitions = [row[0] for row in conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'audit' AND indexname = ANY(%s)", (list(filtered),))]
    assert len(definitions) == 5 and all("project_id IS NOT NULL" in d for d in definitions), definitions


def indexes(url: str, table: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {row[0] for row in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = %s", (table,))}


def test_a_lock_timeout_of_zero_means_no_bound_as_postgresql_reads_it() -> None:
    from projections.ddl import lock_timeout  # noqa: PLC0415

    assert lock_timeout(0).as_string(None) == "SET LOCAL lock_timeout = '0'"
    assert lock_timeout(5).as_string(None) == "SET LOCAL lock_timeout = '5000ms'"

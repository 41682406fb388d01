"""PostgreSQL: turning a database URL into eventsourcing's settings, and making sure the database exists."""

import contextlib
import os
import uuid
from collections.abc import Iterator
from typing import Any, cast

import psycopg
from eventsourcing import persistence
from eventsourcing.postgres import ConnectionPool, PostgresDatastore, PostgresFactory
from eventsourcing.utils import Environment, EnvType
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import PoolTimeout

from projections.ddl import MIGRATION_LOCK_KEY

# The database URL as given, for ``KeyledgerPostgresFactory``: an unprefixed name, read as it is (eventsourcing's
# ``Environment.get`` would look for ``KEYLEDGER_``-prefixed names in the process environment first).
STORE_CONNINFO = "POSTGRES_CONNINFO"
# Seconds a caller waits for one of the pool's connections before ``StoreUnavailable`` (a 503).
POOL_WAIT_SECONDS = 5
# What eventsourcing's own settings put in its pool's connection arguments: replaced by the URL's own.
_EVENTSOURCING_PARAMETERS = ("dbname", "host", "port", "user", "password")


def eventsourcing_env(database_url: str, *, pool_size: int, create_table: bool) -> dict[str, str]:
    """Returns the environment eventsourcing's PostgreSQL persistence module reads.

    Args:
        database_url: a libpq URL; a ``host`` that is a directory means a Unix socket (the embedded server).
        pool_size: connections per process.
        create_table: whether this process creates tables (only the process that migrates should).
    """
    info = conninfo_to_dict(database_url)
    return {
        "PERSISTENCE_MODULE": f"{__name__}:{KeyledgerPostgresFactory.__name__}",
        STORE_CONNINFO: database_url,
        # eventsourcing requires these; the store's connections take the URL's own parameters instead (see below).
        "POSTGRES_DBNAME": str(info.get("dbname") or "keyledger"),
        "POSTGRES_HOST": str(info.get("host") or "127.0.0.1"),
        "POSTGRES_PORT": str(info.get("port") or "5432"),
        "POSTGRES_USER": str(info.get("user") or "postgres"),
        "POSTGRES_PASSWORD": str(info.get("password") or ""),
        "POSTGRES_POOL_SIZE": str(pool_size),
        "POSTGRES_MAX_OVERFLOW": str(pool_size),
        "POSTGRES_CONN_MAX_AGE": "",
        "POSTGRES_LOCK_TIMEOUT": "5",
        # How long a request waits for one of the pool's connections (eventsourcing's default: 30 s, which every
        # retry of a read would wait again): past it, PostgreSQL is unreachable or overloaded, and the answer is a
        # 503 (``StoreUnavailable``).
        "POSTGRES_CONNECT_TIMEOUT": str(POOL_WAIT_SECONDS),
        "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT": "10",
        "CREATE_TABLE": "y" if create_table else "n",
        "APPLICATION_RECORDER_TOPIC": "infrastructure.recorder:OneTripRecorder",
    }


# No parallel plans, no just-in-time compilation: see ``session_options``.
SESSION_SETTINGS = "-c max_parallel_workers_per_gather=0 -c jit=off"


def session_options(options: str | None) -> str:
    """libpq's ``options`` for a keyledger session: the given ones, then no parallel plans and no JIT compilation.

    keyledger's statements read a few rows by key, or a page of them, and PostgreSQL prices them by how many rows it
    expects. A prepared statement's generic plan, on a table without statistics (a cluster without autovacuum),
    guesses that ``= ANY(array)`` matches a fixed share of the rows, however unique the key, so the price grows with
    the table, and two of PostgreSQL's tools for big queries start paying off on paper while costing every execution:

    - a parallel plan starts (forks) its worker processes on every execution: past a hundred thousand events the
      revocation batch's read of the store was planned as a Parallel Append of its two halves, about 140 worker
      processes a second, and the machine answered a third of the revocations it answers without them;
    - past ``jit_above_cost`` (100,000) a statement is compiled to machine code with LLVM on every execution: past
      about 400,000 events the same read cost 10 ms of compilation for 0.5 ms of work (benchmarks/HISTORY.md,
      sessions 18 and 19).

    Args:
        options: the options the connection would have had (a URL's); None for none given, which leaves those of
            the ``PGOPTIONS`` environment variable, as libpq would (an explicit ``options`` replaces it).

    Returns:
        The options, with keyledger's settings last (the last setting of a name wins).
    """
    given = options if options is not None else os.environ.get("PGOPTIONS")
    return f"{given} {SESSION_SETTINGS}" if given else SESSION_SETTINGS


class StoreUnavailable(persistence.PersistenceError):
    """The pool had no connection to hand out within ``POOL_WAIT_SECONDS``: PostgreSQL is unreachable, or every
    connection is busy.

    Not an ``OperationalError``: eventsourcing's reads and keyledger's recorder retry those (ten attempts each, for
    a connection lost mid-query), and each attempt would wait for the pool again, so a request during an outage
    hung for minutes, holding a worker thread. This is raised once, and the HTTP layer answers it with a 503.
    """


class FailFastDatastore(PostgresDatastore):
    """eventsourcing's datastore, whose pool timeout is final (``StoreUnavailable``) rather than retried."""

    @contextlib.contextmanager
    def get_connection(self) -> Iterator[Any]:
        """eventsourcing's connection, or ``StoreUnavailable`` once the pool's wait is over."""
        try:
            with super().get_connection() as conn:
                yield conn
        except persistence.OperationalError as exc:
            if isinstance(exc.__cause__, PoolTimeout):
                raise StoreUnavailable("no database connection within the pool's wait") from exc.__cause__
            raise


class KeyledgerPostgresFactory(PostgresFactory):
    """eventsourcing's PostgreSQL factory, whose pool connects with the URL as libpq reads it, and keyledger's
    session settings.

    eventsourcing's settings name the server, database, user and password only, with defaults of their own for the
    parts a URL leaves out. Every other parameter would be dropped for the event store, the one connection that most
    needs an operator's ``sslmode=verify-full``, and a part the URL leaves out (a ``service`` file's database,
    ``PGUSER``, ``PGPASSWORD``) would differ from what the request gate and the migration lock connect to: they take
    the URL as it is. So the store's connections take exactly the URL's parameters, libpq's defaults filling the
    rest, as everywhere else. The pool is built closed, so they are in place before its first connection (the
    recorder's constructor opens it).
    """

    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        if type(self.datastore) is PostgresDatastore:  # built by eventsourcing's factory; only its method differs
            self.datastore.__class__ = FailFastDatastore
        conninfo = dict.get(self.env, STORE_CONNINFO)
        kwargs = cast(dict[str, Any], self.datastore.pool.kwargs)  # a dict: eventsourcing's datastore builds it
        if conninfo is not None:
            for name in _EVENTSOURCING_PARAMETERS:
                kwargs.pop(name, None)
            kwargs.update(conninfo_to_dict(conninfo))
        kwargs["options"] = session_options(kwargs.get("options"))


class RecentFirstPool(ConnectionPool[Any]):
    """eventsourcing's psycopg pool, handing out the connection returned last.

    psycopg_pool hands its idle connections out in turn, so a process whose statements come one after another (the
    group committer, the projection runners) spreads them over every server process of its pool, each of them
    cold: its CPU caches, its plan and catalogue caches. Taking the most recently returned one keeps the few
    server processes that the concurrency needs busy and hot, and leaves the others idle (those above the pool's
    minimum size are closed by its idle timeout; the others stay open, unused while the load is low). Measured on
    revocations at concurrency 32: PostgreSQL's CPU per revocation 200 -> 166-173 us. The override relies on
    psycopg_pool's internals (its deque of idle connections, taken from the left): ``tests/integration/test_pool.py``
    fails if a release changes them.
    """

    def _get_ready_connection(self, timeout: float | None) -> Any:
        if self._pool:
            self._pool.rotate(1)  # returned connections are appended on the right; the next is taken on the left
        return super()._get_ready_connection(timeout)


def hand_out_recent_first(pool: ConnectionPool[Any]) -> None:
    """Makes ``pool`` (eventsourcing's, built by its datastore) a ``RecentFirstPool``."""
    if type(pool) is ConnectionPool:
        pool.__class__ = RecentFirstPool


def with_database(database_url: str, dbname: str) -> str:
    """Returns ``database_url`` pointing at another database on the same server."""
    info = conninfo_to_dict(database_url)
    info["dbname"] = dbname
    return make_conninfo(**info)


def ensure_database(database_url: str) -> None:
    """Creates the URL's database if it does not exist (connecting to the server's ``postgres`` database)."""
    dbname = conninfo_to_dict(database_url).get("dbname") or "keyledger"
    with psycopg.connect(with_database(database_url, "postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(str(dbname))))


@contextlib.contextmanager
def migration_lock(database_url: str) -> Iterator[None]:
    """Serialises schema creation across processes.

    ``CREATE TABLE IF NOT EXISTS`` is not safe against a concurrent identical statement (PostgreSQL can raise a
    unique violation on its catalogue), so processes starting together on a fresh database take turns.
    """
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))


@contextlib.contextmanager
def scratch_database(server_url: str, prefix: str) -> Iterator[str]:
    """A uniquely named database on ``server_url``'s server (``prefix`` and a random suffix), dropped at the end
    (tests and benchmarks)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = with_database(server_url, "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_database(server_url, name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

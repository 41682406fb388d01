"""The event store's connections take the database URL as libpq reads it, not only the address, database and user
that eventsourcing's settings carry: an operator's TLS mode, timeouts and session options reach every connection the
store (and with it every read model) opens, with keyledger's own session settings after them, and what the URL leaves
out comes from libpq's defaults, as for the request gate."""

from collections.abc import Callable
from typing import Any
from uuid import uuid4

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from infrastructure import postgres
from infrastructure.bootstrap import Endpoints, build
from infrastructure.settings import Settings
from tests.conftest import fresh_database

pytestmark = pytest.mark.integration

SESSION = ("SELECT current_database() AS db, current_setting('application_name') AS app, "
           "current_setting('statement_timeout') AS timeout, current_setting('jit') AS jit, "
           "current_setting('max_parallel_workers_per_gather') AS parallel")  # named: the rows are dicts


def on_every_connection(settings: Settings, endpoints: Endpoints,
                        probe: Callable[[Any], tuple[Any, ...]]) -> set[tuple[Any, ...]]:
    """``probe``'s answers on every connection the store's pool of a container built on ``endpoints`` has or can
    open, the first one included."""
    container = build(settings, endpoints, migrate=True)
    try:
        pool = container.app.recorder.datastore.pool
        held = [pool.getconn() for _ in range(pool.max_size)]
        try:
            return {probe(conn) for conn in held}
        finally:
            for conn in held:
                pool.putconn(conn)
    finally:
        container.close()


def session_of(conn: Any) -> tuple[Any, ...]:
    row = conn.execute(SESSION).fetchone()
    parameters = conn.info.get_parameters()  # libpq's defaults are not listed: a dropped parameter would be missing
    return (*row.values(), parameters.get("sslmode"), parameters.get("connect_timeout"))


def test_every_connection_of_the_store_takes_the_urls_parameters(server_url: str, redis_url: str,
                                                                  settings: Settings) -> None:
    with fresh_database(server_url) as url:
        # sslmode=disable stands for any TLS mode (this server has none to require).
        configured = make_conninfo(url, sslmode="disable", connect_timeout="3", application_name="keyledger-store",
                                   options="-c statement_timeout=7000")
        sessions = on_every_connection(settings, Endpoints(database_url=configured, redis_url=redis_url), session_of)
    assert sessions == {(conninfo_to_dict(url)["dbname"], "keyledger-store", "7s", "off", "0", "disable", "3")}


def test_what_the_url_leaves_out_comes_from_libpqs_defaults(server_url: str, redis_url: str, settings: Settings,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A URL without a database name connects, like the request gate's pool, to libpq's default one (``PGDATABASE``
    here), not to the default of eventsourcing's settings (``keyledger``)."""
    with fresh_database(server_url) as url:
        parameters = conninfo_to_dict(url)
        database = str(parameters.pop("dbname"))
        monkeypatch.setenv("PGDATABASE", database)
        endpoints = Endpoints(database_url=make_conninfo(**parameters), redis_url=redis_url)
        databases = on_every_connection(settings, endpoints, lambda conn: tuple(
            conn.execute("SELECT current_database()").fetchone().values()))
    assert databases == {(database,)}


def test_a_pool_with_no_connection_to_hand_out_fails_once_not_per_retry(server_url: str, redis_url: str,
                                                                       settings: Settings,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The store's reads retry a lost connection ten times; a pool that hands out no connection within its wait is
    not retried (``StoreUnavailable``, a 503): each retry would wait again, and a request during an outage hung
    for minutes."""
    monkeypatch.setattr(postgres, "POOL_WAIT_SECONDS", 1)
    with fresh_database(server_url) as url:
        container = build(settings, Endpoints(database_url=url, redis_url=redis_url), migrate=True)
        try:
            pool = container.app.recorder.datastore.pool
            held = [pool.getconn() for _ in range(pool.max_size)]
            try:
                pool.pop_stats()
                with pytest.raises(postgres.StoreUnavailable):
                    container.app.recorder.select_events(uuid4())
                assert pool.get_stats().get("requests_errors") == 1  # one wait for a connection, not ten
            finally:
                for conn in held:
                    pool.putconn(conn)
            assert container.app.recorder.select_events(uuid4()) == []  # served again once one is free
        finally:
            container.close()

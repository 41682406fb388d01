"""The event store's connections honour the whole database URL, not only the address, database and user that
eventsourcing's settings carry: an operator's TLS mode, timeouts and session options reach every connection the store
(and with it every read model) opens, with keyledger's own session settings after them."""

from typing import Any

import pytest
from psycopg.conninfo import make_conninfo

from infrastructure.bootstrap import Endpoints, build
from infrastructure.settings import Settings
from tests.conftest import fresh_database

pytestmark = pytest.mark.integration

SESSION = ("SELECT current_setting('application_name') AS application_name, "
           "current_setting('statement_timeout') AS statement_timeout, current_setting('jit') AS jit, "
           "current_setting('max_parallel_workers_per_gather') AS parallel")


def test_every_connection_of_the_store_takes_the_urls_parameters(server_url: str, redis_url: str,
                                                                  settings: Settings) -> None:
    with fresh_database(server_url) as url:
        # sslmode=disable stands for any TLS mode: libpq's default (prefer) would show if the URL's were dropped.
        configured = make_conninfo(url, sslmode="disable", connect_timeout="3", application_name="keyledger-store",
                                   options="-c statement_timeout=7000")
        container = build(settings, Endpoints(database_url=configured, redis_url=redis_url), migrate=True)
        try:
            pool = container.app.recorder.datastore.pool
            held: list[Any] = [pool.getconn() for _ in range(pool.max_size)]  # the first connection included
            try:
                sessions = {tuple(conn.execute(SESSION).fetchone().values()) for conn in held}
                parameters = {(conn.info.get_parameters().get("sslmode"),
                               conn.info.get_parameters().get("connect_timeout")) for conn in held}
            finally:
                for conn in held:
                    pool.putconn(conn)
        finally:
            container.close()
    assert sessions == {("keyledger-store", "7s", "off", "0")}
    assert parameters == {("disable", "3")}

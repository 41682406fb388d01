"""The runners of a process share one decoder: each stored event is decoded once for all the read models."""

from typing import Any

import pytest
from psycopg.sql import SQL

from application.oauth.grants import TokenRequest
from infrastructure.bootstrap import Container
from projections.base import ProjectionRunner, SharedDecoder
from tests.integration.support import notifications, sign_up

pytestmark = pytest.mark.integration


class CountingMapper:
    """The application's real mapper, counting what it decodes."""

    def __init__(self, mapper: Any) -> None:
        self.mapper = mapper
        self.decoded: list[int] = []

    def to_domain_event(self, notification: Any) -> Any:
        self.decoded.append(notification.id)
        return self.mapper.to_domain_event(notification)


def rows(container: Container, table: str, order: str) -> list[tuple[Any, ...]]:
    with container.app.recorder.datastore.get_connection() as conn, conn.cursor() as curs:
        curs.execute(SQL("SELECT * FROM {} ORDER BY " + order).format(container.lookup.table(table)))
        return [tuple(row.values()) for row in curs.fetchall()]


def test_two_models_fed_by_one_decoder_decode_each_event_once_and_end_as_if_alone(quiet_container: Container) -> None:
    container = quiet_container
    for name in ("A", "B"):
        account = sign_up(container, project=name)
        for _ in range(3):
            container.tokens.handle(TokenRequest(grant_type="client_credentials",
                                                 client_id=account.client.client.client_id,
                                                 client_secret=account.client.client_secret))
    for model in (container.lookup, container.audit):
        model.reset()
    counting = CountingMapper(container.app.mapper)
    shared = SharedDecoder(counting)
    runners = [ProjectionRunner(recorder=container.app.recorder, mapper=shared, model=model)
               for model in (container.lookup, container.audit)]
    for runner in runners:
        runner.catch_up()

    assert len(counting.decoded) == len(set(counting.decoded)), "an event was decoded twice"
    # The audit model reads every stored event; the token lookup model reuses its decodings.
    assert sorted(counting.decoded) == [n.id for n in notifications(container)]
    shared_lookup = rows(container, "token_lookup", "token_id")
    shared_audit = rows(container, "audit", "position, chain")
    assert shared_lookup and shared_audit

    for model in (container.lookup, container.audit):  # again, each model with its own decoder
        model.reset()
        ProjectionRunner(recorder=container.app.recorder, mapper=container.app.mapper, model=model).catch_up()
    assert rows(container, "token_lookup", "token_id") == shared_lookup
    assert rows(container, "audit", "position, chain") == shared_audit

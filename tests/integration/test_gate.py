"""The request gate and the bearer check on the event loop, against the real store: a key revoked while a request
is in flight, and a database connection lost under the gate's pool."""

import asyncio
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any
from uuid import uuid4

import psycopg
import pytest

from application.oauth.grants import TokenRequest
from infrastructure.bootstrap import Container, Endpoints, build
from infrastructure.http.auth import principal
from infrastructure.http.errors import BearerError
from infrastructure.http.gate import GateAnswer, RequestGate, events_table, revoked_table
from infrastructure.settings import Settings
from tests.conftest import fresh_database
from tests.integration.support import sign_up
from workers.keys import key_rotation


@pytest.fixture
def pair(server_url: str, redis_url: str, settings: Settings) -> Iterator[tuple[Container, Container, str]]:
    """Two processes' containers on one fresh database: an operator's and an API process's."""
    with fresh_database(server_url) as url:
        endpoints = Endpoints(database_url=url, redis_url=redis_url)
        first = build(settings, endpoints, migrate=True)
        second = build(settings, endpoints)
        try:
            yield first, second, url
        finally:
            second.close()
            first.close()


def issue(container: Container) -> str:
    signed = sign_up(container)
    return str(container.tokens.handle(TokenRequest(grant_type="client_credentials",
                                                    client_id=signed.client.client.client_id,
                                                    client_secret=signed.client.client_secret)).access_token)


class RacingGate:
    """A gate that lets something happen between the token's check and the gate's query."""

    def __init__(self, gate: RequestGate, meanwhile: Any) -> None:
        self.gate, self.meanwhile = gate, meanwhile

    async def check(self, token_id: Any, project_id: Any) -> GateAnswer:
        self.meanwhile()
        return await self.gate.check(token_id, project_id)


def bearer_request(token: str) -> Any:
    return SimpleNamespace(headers={"authorization": f"Bearer {token}"}, path_params={}, state=SimpleNamespace())


def open_gate(loop: asyncio.AbstractEventLoop, api: Container, url: str) -> RequestGate:
    gate = RequestGate(url, lookup_table=api.lookup.table("token_lookup"), events_table=events_table(api.app),
                       revoked_table=revoked_table(api.app), max_size=1)
    loop.run_until_complete(gate.open())
    return gate


def test_a_key_revoked_while_a_request_is_in_flight_refuses_it(pair: tuple[Container, Container, str]) -> None:
    operator, api, url = pair
    token = issue(api)
    loop = asyncio.new_event_loop()
    gate = open_gate(loop, api, url)
    try:
        assert loop.run_until_complete(principal(bearer_request(token), SimpleNamespace(container=api, gate=gate)))

        def revoke_the_key_and_reload_elsewhere() -> None:
            key_rotation(operator).rotate(emergency=True, actor="operator")
            api.keys.reload()  # another thread of the API process (the signer's check, say) sees it first

        racing = SimpleNamespace(container=api, gate=RacingGate(gate, revoke_the_key_and_reload_elsewhere))
        with pytest.raises(BearerError):
            loop.run_until_complete(principal(bearer_request(token), racing))
    finally:
        loop.run_until_complete(gate.close())
        loop.close()


def test_a_lost_connection_is_replaced_without_an_error(pair: tuple[Container, Container, str]) -> None:
    _, api, url = pair
    loop = asyncio.new_event_loop()
    gate = open_gate(loop, api, url)
    try:
        async def backend() -> int:
            async with gate.pool.connection() as conn:
                row = await (await conn.execute("SELECT pg_backend_pid()")).fetchone()
                assert row is not None
                return int(row[0])

        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (loop.run_until_complete(backend()),))
        answer = loop.run_until_complete(gate.check(uuid4(), None))
        assert answer.revoked is False and answer.project_version is None
    finally:
        loop.run_until_complete(gate.close())
        loop.close()

"""The request gate and the bearer check on the event loop, against the real store: a key revoked while a request
is in flight, and a database connection lost under the gate's pool."""

import asyncio
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any
from uuid import UUID, uuid4

import jwt
import psycopg
import pytest
from litestar.datastructures import Headers
from psycopg.conninfo import make_conninfo

from application.members import AddMember
from application.oauth.grants import TokenRequest
from application.oauth.revocation import RevocationRequest
from domain.scopes import Role
from infrastructure.bootstrap import Container, Endpoints, build
from infrastructure.http.auth import principal
from infrastructure.http.errors import BearerError
from infrastructure.http.gate import GateAnswer, RequestGate, events_table, revoked_table
from infrastructure.settings import Settings
from tests.conftest import fresh_database
from tests.integration.support import sign_up
from tests.integration.webhook_support import owner
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


SETTINGS = ("SELECT current_setting('max_parallel_workers_per_gather') AS max_parallel_workers_per_gather, "
            "current_setting('jit') AS jit, current_setting('statement_timeout') AS statement_timeout")


def issue(container: Container) -> str:
    return issue_for(container, sign_up(container))


class RacingGate:
    """A gate that lets something happen between the token's check and the gate's query."""

    def __init__(self, gate: RequestGate, meanwhile: Any) -> None:
        self.gate, self.meanwhile = gate, meanwhile

    async def check(self, token_id: Any, project_id: Any) -> GateAnswer:
        self.meanwhile()
        return await self.gate.check(token_id, project_id)


def bearer_request(token: str) -> Any:
    return SimpleNamespace(headers=Headers({"authorization": f"Bearer {token}"}), path_params={},
                           state=SimpleNamespace())


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
        assert answer.revoked is False and answer.stream_version is None
    finally:
        loop.run_until_complete(gate.close())
        loop.close()


def test_questions_asked_together_get_each_their_own_token_and_project(pair: tuple[Container, Container, str]) -> None:
    """Two tenants' requests in one coalesced query: each gets its own token's revocation and its own project's
    version, never the other's."""
    _, api, url = pair
    first, second = sign_up(api, project="First"), sign_up(api, project="Second")
    colleague = sign_up(api)
    api.members_admin.add(AddMember(project_id=first.project.id, email=colleague.user.email, role=Role.AUDITOR,
                                    caller=owner(first)))  # the two projects' streams now differ in length
    tokens = [issue_for(api, first), issue_for(api, second)]
    api.revocation.handle(first.client.client, RevocationRequest(token=tokens[0], token_type_hint=None))
    ids = [UUID(jwt.decode(token, options={"verify_signature": False})["jti"]) for token in tokens]
    versions = [api.app.repository.get(account.project.id).version for account in (first, second)]
    assert versions[0] != versions[1]
    loop = asyncio.new_event_loop()
    gate = open_gate(loop, api, url)
    try:
        async def together() -> list[GateAnswer]:
            return list(await asyncio.gather(gate.check(ids[0], second.project.id),
                                             gate.check(ids[1], first.project.id), gate.check(ids[1], None),
                                             gate.check(uuid4(), uuid4())))

        answers = loop.run_until_complete(together())
        assert gate.reads.queries == 1 and gate.reads.keys == 4
    finally:
        loop.run_until_complete(gate.close())
        loop.close()
    assert [answer.revoked for answer in answers] == [True, False, False, False]
    assert [answer.stream_version for answer in answers] == [versions[1], versions[0], None, None]
    assert len({answer.ring_version for answer in answers}) == 1 and answers[0].ring_version > 0


def issue_for(container: Container, account: Any) -> str:
    return str(container.tokens.handle(TokenRequest(grant_type="client_credentials",
                                                    client_id=account.client.client.client_id,
                                                    client_secret=account.client.client_secret)).access_token)


def test_the_gate_reads_the_revocation_list_by_key_under_a_plan_made_while_it_was_empty(
        pair: tuple[Container, Container, str]) -> None:
    """The gate's prepared query keeps its plan for the connection's life: one made while the revocation list was
    empty must not read the whole list once it is long, by a scan or through an index (here with the plan generic,
    made and kept while the list was empty)."""
    _, api, url = pair
    loop = asyncio.new_event_loop()
    gate = open_gate(loop, api, url)
    listed = revoked_table(api.app).as_string(None)

    async def rows_read() -> int:
        """Rows and index entries of the list read so far, the gate connection's own reads flushed first."""
        async with gate.pool.connection() as conn:  # the gate's one connection (max_size=1)
            await conn.execute("SELECT pg_stat_force_next_flush()")  # flushed once this statement is done
            cursor = await conn.execute(
                "SELECT coalesce(seq_tup_read, 0) + coalesce((SELECT sum(idx_tup_read) FROM pg_stat_user_indexes i "
                "WHERE i.relid = t.relid), 0) FROM pg_stat_user_tables t WHERE relid = %s::regclass", (listed,))
            row = await cursor.fetchone()
            return int(row[0]) if row else 0

    async def generic_plans() -> None:
        async with gate.pool.connection() as conn:
            await conn.execute("SET plan_cache_mode = force_generic_plan")

    try:
        loop.run_until_complete(generic_plans())
        loop.run_until_complete(gate.read(uuid4(), None))  # prepared and planned on an empty list
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"INSERT INTO {listed} SELECT gen_random_uuid() FROM generate_series(1, 3000)")
        before = loop.run_until_complete(rows_read())
        answer = loop.run_until_complete(gate.read(uuid4(), None))
        after = loop.run_until_complete(rows_read())
    finally:
        loop.run_until_complete(gate.close())
        loop.close()
    assert answer.written_through is False
    assert after - before <= 10  # one probe of the list's index (a scan would read 3,000 rows)


def test_the_gates_sessions_plan_without_parallel_workers_or_jit_and_keep_the_urls_options(
        pair: tuple[Container, Container, str]) -> None:
    """A parallel plan forks worker processes, and JIT compiles the statement, on every execution (see
    ``session_options``): the gate's pool may do neither, and options the operator put in the URL still apply.
    (The store's pool: ``test_store_connection``.)"""
    _, api, url = pair
    loop = asyncio.new_event_loop()
    gate = open_gate(loop, api, make_conninfo(url, options="-c statement_timeout=7000"))
    try:
        async def gate_settings() -> tuple[str, str, str]:
            async with gate.pool.connection() as conn:
                row = await (await conn.execute(SETTINGS)).fetchone()
                assert row is not None
                return row[0], row[1], row[2]

        assert loop.run_until_complete(gate_settings()) == ("0", "off", "7s")
    finally:
        loop.run_until_complete(gate.close())
        loop.close()

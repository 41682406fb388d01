"""The expiry sweeps on real PostgreSQL: batches, the hot table kept small, listings, rebuilds, racing sweeps."""

from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest
from psycopg.sql import SQL

from application.clients import RotateSecret
from application.expiry import TokenSweep
from application.oauth.grants import TokenRequest
from application.oauth.revocation import RevocationRequest
from domain.scopes import ALL_SCOPES
from domain.token import Token
from infrastructure.bootstrap import Container
from infrastructure.settings import Settings
from projections.token_lookup import REVOKED_TOKENS_TABLE, TokenQuery
from tests.integration.conftest import isolated_container
from tests.integration.support import head, in_parallel, notifications, sign_up
from workers.expiry import prune_revocation_list, secret_sweep, token_sweep

pytestmark = pytest.mark.integration

EXPIRED = "domain.token:Token.TokenExpired"
SECRET_EXPIRED = "domain.client:Client.ClientSecretExpired"


class ShiftedClock:
    """The real time moved ``by`` ahead: the sweep sees today's tokens as past their expiry."""

    def __init__(self, clock: Any, by: timedelta) -> None:
        self.clock, self.by = clock, by

    def now(self) -> Any:
        return self.clock.now() + self.by


@pytest.fixture
def own(server_url: str, redis_url: str, settings: Settings) -> Iterator[Container]:
    """A container on a fresh database (the sweeps here run in the future: no other test's tokens may be there)."""
    with isolated_container(server_url, redis_url, settings) as built:
        built.start_projections()
        yield built


def issue(container: Container, count: int) -> tuple[Any, list[UUID]]:
    signed = sign_up(container)
    before = head(container)
    for _ in range(count):
        container.tokens.handle(TokenRequest(grant_type="client_credentials", client_id=signed.client.client.client_id,
                                             client_secret=signed.client.client_secret))
    ids = [n.originator_id for n in notifications(container, before) if n.topic.endswith("Token.TokenIssued")]
    container.lookup.wait_for(head(container))
    return signed, ids


def future_sweep(container: Container, **options: Any) -> TokenSweep:
    later = ShiftedClock(container.tokens.clock, timedelta(hours=2))
    return TokenSweep(app=container.app, clock=later, index=container.lookup, **options)


def test_the_sweep_expires_due_tokens_in_batches_and_moves_them_out_of_the_hot_table(own: Container) -> None:
    signed, ids = issue(own, 25)
    sizes = own.lookup.sizes()
    result = future_sweep(own, batch_size=10).run()
    assert (result.expired, result.batches) == (25, 3)
    own.lookup.wait_for(head(own))
    assert sorted(n.originator_id for n in notifications(own) if n.topic == EXPIRED) == sorted(ids)
    after = own.lookup.sizes()
    assert after["token_lookup"] == sizes["token_lookup"] - 25 and after["token_expired"] == sizes["token_expired"] + 25
    row = own.lookup.get(ids[0])
    assert row is not None and (row.status, row.ended_reason, row.ended_by) == ("expired", "expired", "system")
    assert not own.lookup.is_revoked(ids[0])
    assert future_sweep(own).run().expired == 0  # idempotent: nothing left
    later = own.tokens.clock.now() + timedelta(hours=2)
    project = signed.project.id
    listed = own.lookup.page(TokenQuery(project_id=project, now=later, limit=100, status="expired"))
    assert sorted(r.token_id for r in listed) == sorted(ids)
    assert own.lookup.page(TokenQuery(project_id=project, now=later, limit=100, status="active")) == []
    everything = own.lookup.page(TokenQuery(project_id=project, now=later, limit=10))
    assert len(everything) == 10 and [r.issued_at for r in everything] == sorted((r.issued_at for r in everything),
                                                                                reverse=True)


def test_the_sweep_leaves_revoked_and_unexpired_tokens(own: Container) -> None:
    _signed, ids = issue(own, 3)
    own.token_admin.revoker.revoke_ids(lambda: [ids[0]], reason="test", actor="system", selects_on_index=False)
    now_sweep = TokenSweep(app=own.app, clock=own.tokens.clock, index=own.lookup)
    assert now_sweep.run().expired == 0
    assert future_sweep(own).run().expired == 2
    own.lookup.wait_for(head(own))
    revoked = own.lookup.get(ids[0])
    assert revoked is not None and revoked.status == "revoked"


def test_two_sweeps_at_once_record_each_expiry_exactly_once(own: Container) -> None:
    _, ids = issue(own, 60)
    sweeps = [future_sweep(own, batch_size=7) for _ in range(2)]
    results = in_parallel(2, lambda i: sweeps[i].run().expired)
    expired = [n.originator_id for n in notifications(own) if n.topic == EXPIRED and n.originator_id in set(ids)]
    assert sorted(expired) == sorted(ids) and sum(results) == 60


def test_a_rebuild_gives_the_same_hot_and_expired_tables(own: Container) -> None:
    issue(own, 5)
    future_sweep(own).run()
    own.lookup.wait_for(head(own))
    before = own.lookup.sizes()
    own.runner(own.lookup.name).rebuild()
    assert own.lookup.sizes() == before


def test_the_expired_table_is_confined_to_its_project(own: Container) -> None:
    _first, ids = issue(own, 2)
    second, _ = issue(own, 1)
    future_sweep(own).run()
    own.lookup.wait_for(head(own))
    later = own.tokens.clock.now() + timedelta(hours=2)
    others = own.lookup.page(TokenQuery(project_id=second.project.id, now=later, limit=100, status="expired"))
    assert not {r.token_id for r in others} & set(ids) and len(others) == 1


def test_the_expired_table_is_under_row_level_security(own: Container) -> None:
    first, _ = issue(own, 2)
    second, _ = issue(own, 1)
    future_sweep(own).run()
    own.lookup.wait_for(head(own))
    a, b = first.project.id, second.project.id
    everything = SQL("SELECT project_id FROM {}").format(own.lookup.table("token_expired"))
    assert [r["project_id"] for r in own.lookup.tenant_select(a, everything, ())] == [a, a]
    wrong = SQL("SELECT project_id FROM {} WHERE project_id = %s").format(own.lookup.table("token_expired"))
    assert own.lookup.tenant_select(b, wrong, (a,)) == []


def test_the_secret_sweep_records_previous_then_current_secret_expiry(own: Container) -> None:
    signed = sign_up(own)
    client_id = signed.client.client.client_id
    own.clients.rotate(RotateSecret(project_id=signed.project.id, client_id=client_id, actor="system",
                                    caller_permissions=ALL_SCOPES, grace_period=3600))
    own.views["secret_expiry"].wait_for(head(own))
    sweep = secret_sweep(own)
    assert sweep.run().expired == 0
    in_two_hours = type(sweep)(app=own.app, clock=ShiftedClock(own.tokens.clock, timedelta(hours=2)),
                               index=sweep.index)
    assert in_two_hours.run().expired >= 1
    own.views["secret_expiry"].wait_for(head(own))
    assert in_two_hours.run().expired == 0
    events = [own.app.mapper.to_domain_event(n) for n in notifications(own) if n.topic == SECRET_EXPIRED]
    mine = [e for e in events if e.client_id == client_id]
    assert [(e.which, e.project_id, e.actor) for e in mine] == [("previous", signed.project.id, "system")]
    in_two_years = type(sweep)(app=own.app, clock=ShiftedClock(own.tokens.clock, timedelta(days=800)),
                               index=sweep.index)
    assert in_two_years.run().expired >= 1
    events = [own.app.mapper.to_domain_event(n) for n in notifications(own) if n.topic == SECRET_EXPIRED]
    assert [e.which for e in events if e.client_id == client_id] == ["previous", "current"]


def test_the_job_function_sweeps_with_the_containers_clock(own: Container) -> None:
    _, ids = issue(own, 1)
    assert token_sweep(own).run().expired == 0  # a fresh token is not due
    assert own.app.load(ids[0], Token).is_live(own.tokens.clock.now())


def test_the_revocation_list_keeps_an_entry_until_its_token_has_expired(own: Container) -> None:
    signed = sign_up(own)
    client = signed.client.client
    issued = [own.tokens.handle(TokenRequest(grant_type="client_credentials", client_id=client.client_id,
                                             client_secret=signed.client.client_secret)) for _ in range(3)]
    for token in issued[:2]:
        own.revocation.handle(client, RevocationRequest(token=token.access_token, token_type_hint=None))
    revoked = [own.revocation.finder.find(t.access_token).id for t in issued[:2]]  # type: ignore[union-attr]
    stranger = UUID(int=7)  # listed, but not a token the lookup model holds (say, a rebuild is under way)
    with own.app.recorder.datastore.transaction(commit=True) as curs:
        curs.execute(SQL("INSERT INTO {} (token_id) VALUES (%s)").format(own.lookup.table(REVOKED_TOKENS_TABLE)),
                     (stranger,))
    own.lookup.wait_for(head(own))
    assert own.lookup.sizes()["revoked_tokens"] == 3
    expiry = own.lookup.get(revoked[0]).expires_at  # type: ignore[union-attr]

    assert prune_revocation_list(own) == (0, False)  # live tokens: their entries are what refuses them
    # The database's clock decides; a negative margin looks ahead to the moments around the expiry.
    ahead = expiry - database_now(own)
    assert prune_revocation_list(own, margin=-(ahead - timedelta(seconds=30))) == (0, False)
    after = -(ahead + timedelta(seconds=30))
    assert prune_revocation_list(own, margin=after, batch_size=1, max_batches=1) == (1, True)
    assert prune_revocation_list(own, margin=after, batch_size=1) == (1, False)
    assert own.lookup.sizes()["revoked_tokens"] == 1  # the stranger's entry stays
    assert all(own.lookup.is_revoked(token_id) for token_id in revoked)  # the model still says revoked
    assert prune_revocation_list(own, margin=after) == (0, False)


def database_now(container: Container) -> Any:
    with container.app.recorder.datastore.get_connection() as conn:
        return conn.execute("SELECT statement_timestamp() AS now").fetchone()["now"]

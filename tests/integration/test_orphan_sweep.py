"""The orphan sweep on real PostgreSQL: a deletion interrupted after its transaction is finished by the sweep.

The crash is simulated by committing a client's ``ClientRevoked`` alone, after a token was issued to it: exactly
what a deletion leaves when its process dies before its late passes (the tokens issued while it ran are not in its
transaction).
"""

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from uuid import UUID

import pytest
from psycopg.sql import SQL

from application.clients import AddClient
from application.oauth.grants import TokenRequest
from domain.client import Client
from domain.ids import client_aggregate_id
from domain.scopes import ALL_SCOPES
from domain.token import Token
from infrastructure.bootstrap import Container
from infrastructure.settings import Settings
from tests.integration.conftest import isolated_container
from tests.integration.support import head, in_parallel, notifications, sign_up, state, uuid_of
from workers.expiry import orphan_sweep, revoke_orphaned_tokens
from workers.status import orphan_backlog

pytestmark = pytest.mark.integration

REVOKED = "domain.token:Token.TokenRevoked"
OWNER = "user:00000000-0000-0000-0000-0000000000aa"


@pytest.fixture
def own(server_url: str, redis_url: str, settings: Settings) -> Iterator[Container]:
    """A container on a fresh database: the sweep reads every project's deleted clients, so no other test's may be
    there."""
    with isolated_container(server_url, redis_url, settings) as built:
        built.start_projections()
        yield built


@dataclass(frozen=True)
class Key:
    """A client and its secret, shown once."""

    project_id: UUID
    client_id: str
    secret: str


@dataclass(frozen=True)
class Issued:
    """An issued access token: its id and its value (the test's own, never logged by the code)."""

    token_id: UUID
    value: str


def first_key(container: Container, project: str) -> Key:
    signed = sign_up(container, project=project)
    return Key(signed.project.id, signed.client.client.client_id, signed.client.client_secret)


def second_key(container: Container, project_id: UUID) -> Key:
    new = container.clients.add(AddClient(project_id=project_id, name="second", actor=OWNER,
                                          creator_permissions=ALL_SCOPES))
    return Key(project_id, new.client.client_id, new.client_secret)


def issue(container: Container, key: Key) -> Issued:
    before = head(container)
    issued = container.tokens.handle(TokenRequest(grant_type="client_credentials", client_id=key.client_id,
                                                  client_secret=key.secret))
    (token_id,) = [n.originator_id for n in notifications(container, before) if n.topic.endswith("TokenIssued")]
    return Issued(token_id, issued.access_token)


def interrupted_deletion(container: Container, key: Key) -> None:
    """The deletion's transaction without its late passes: ``ClientRevoked`` alone, the token left live."""
    client = container.app.load(client_aggregate_id(key.client_id), Client)
    client.revoke(actor=OWNER)
    container.app.save(client)


def caught_up(container: Container) -> None:
    position = head(container)
    container.lookup.wait_for(position)
    container.clients_view.wait_for(position)


def introspect(container: Container, caller: Key, token: Issued) -> bool:
    client = container.app.load(client_aggregate_id(caller.client_id), Client)
    return bool(container.introspection.handle(client, token.value)["active"])


def revocations(container: Container, after: int) -> list[dict[str, object]]:
    return [{"token_id": n.originator_id, **state(n)} for n in notifications(container, after) if n.topic == REVOKED]


def test_the_sweep_revokes_what_an_interrupted_deletion_left_and_nothing_else(own: Container) -> None:
    deleted = first_key(own, "Acme")
    kept_same_project = second_key(own, deleted.project_id)
    other_project = first_key(own, "Other")
    orphan, live, foreign = issue(own, deleted), issue(own, kept_same_project), issue(own, other_project)
    interrupted_deletion(own, deleted)
    caught_up(own)
    assert introspect(own, kept_same_project, orphan)  # the hole: live although its client is deleted
    assert orphan_backlog(own) == [("orphan sweep", "tokens of deleted clients", "1")]

    before = head(own)
    result = orphan_sweep(own).run()

    assert (result.revoked, result.spared, result.more) == (1, 0, False)
    (recorded,) = revocations(own, before)
    assert recorded["token_id"] == orphan.token_id
    assert (recorded["reason"], recorded["actor"]) == ("client deleted", "system")
    assert own.lookup.is_revoked(orphan.token_id) and own.app.load(orphan.token_id, Token).revoked
    assert not introspect(own, kept_same_project, orphan)
    assert introspect(own, kept_same_project, live) and introspect(own, other_project, foreign)
    assert not own.lookup.is_revoked(live.token_id) and not own.lookup.is_revoked(foreign.token_id)
    caught_up(own)
    assert orphan_backlog(own) == [("orphan sweep", "tokens of deleted clients", "0")]


def test_a_second_sweep_records_nothing(own: Container) -> None:
    deleted = first_key(own, "Acme")
    orphans = [issue(own, deleted) for _ in range(3)]
    interrupted_deletion(own, deleted)
    caught_up(own)
    assert orphan_sweep(own).run().revoked == 3
    before = head(own)
    # At once (the lookup model may still list them as active: their streams say revoked) and once caught up.
    assert orphan_sweep(own).run().revoked == 0
    caught_up(own)
    assert orphan_sweep(own).run().revoked == 0
    assert head(own) == before
    assert all(own.lookup.is_revoked(t.token_id) for t in orphans)


def test_the_sweep_pages_through_candidates_with_its_cursor(own: Container) -> None:
    first, second = first_key(own, "Acme"), first_key(own, "Other")
    orphans = [issue(own, first) for _ in range(3)] + [issue(own, second) for _ in range(2)]
    interrupted_deletion(own, first)
    interrupted_deletion(own, second)
    caught_up(own)
    before = head(own)
    result = orphan_sweep(own, batch_size=2).run()
    assert (result.revoked, result.batches, result.more) == (5, 3, False)
    recorded = revocations(own, before)
    assert sorted(r["token_id"] for r in recorded) == sorted(t.token_id for t in orphans)
    # A revocation id groups one client's tokens in the audit ledger, never tokens of two clients or projects.
    clients_of: dict[object, set[object]] = {}
    for r in recorded:
        clients_of.setdefault(uuid_of(r["revocation_id"]), set()).add(r["client_id"])
    assert all(len(named) == 1 for named in clients_of.values()) and len(clients_of) >= 2


def test_a_bounded_run_leaves_the_rest_to_the_next(own: Container) -> None:
    deleted = first_key(own, "Acme")
    orphans = [issue(own, deleted) for _ in range(3)]
    interrupted_deletion(own, deleted)
    caught_up(own)
    first = orphan_sweep(own, batch_size=1, max_batches=2).run()
    assert (first.revoked, first.batches, first.more) == (2, 2, True)
    caught_up(own)  # the next run comes a period later: the lookup model has applied this one's revocations
    assert orphan_sweep(own, batch_size=1, max_batches=2).run().revoked == 1
    assert all(own.app.load(t.token_id, Token).revoked for t in orphans)


def test_the_decision_is_the_client_stream_s_not_the_read_model_s(own: Container) -> None:
    """A clients model that says "revoked" for a live client (lagging a rebuild, damaged) revokes nothing."""
    live = first_key(own, "Acme")
    token = issue(own, live)
    caught_up(own)
    with own.clients_view.datastore.transaction(commit=True) as curs:
        curs.execute(SQL("UPDATE {} SET revoked_at = now() WHERE client_id = %s").format(
            own.clients_view.table("client_view")), (live.client_id,))
    before = head(own)
    result = orphan_sweep(own).run()
    assert (result.revoked, result.spared) == (0, 1)
    assert head(own) == before and introspect(own, live, token)


def test_two_sweeps_at_once_revoke_each_orphan_exactly_once(own: Container) -> None:
    deleted = first_key(own, "Acme")
    orphans = [issue(own, deleted) for _ in range(12)]
    interrupted_deletion(own, deleted)
    caught_up(own)
    before = head(own)
    sweeps = [orphan_sweep(own, batch_size=5) for _ in range(2)]
    results = in_parallel(2, lambda i: sweeps[i].run().revoked)
    recorded = [r["token_id"] for r in revocations(own, before)]
    assert sorted(recorded) == sorted(t.token_id for t in orphans) and sum(results) == 12


def test_the_job_logs_counts_and_never_a_token(own: Container, caplog: pytest.LogCaptureFixture) -> None:
    deleted = first_key(own, "Acme")
    orphan = issue(own, deleted)
    interrupted_deletion(own, deleted)
    caught_up(own)
    with caplog.at_level(logging.INFO, logger="keyledger.jobs"):
        revoke_orphaned_tokens(own)
    (line,) = [r.getMessage() for r in caplog.records if "revoke-orphaned-tokens" in r.getMessage()]
    assert '"revoked":1' in line and '"spared":0' in line
    assert orphan.value not in line and str(orphan.token_id) not in line and deleted.secret not in line
    assert own.app.load(orphan.token_id, Token).revoked

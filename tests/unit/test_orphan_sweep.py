"""The orphan sweep's decisions on the in-memory store: the streams decide, whatever the candidates claim."""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from application.accounts import SignedUp
from application.oauth.grants import TokenRequest
from application.orphans import OrphanCandidate, OrphanCursor, OrphanSweep
from domain.client import Client
from domain.ids import client_aggregate_id
from domain.token import Token
from tests.unit.conftest import World

OWNER = "user:00000000-0000-0000-0000-0000000000aa"


@dataclass
class Listed:
    """Candidates as a read model would list them, right or wrong (the sweep must not trust them)."""

    rows: list[OrphanCandidate] = field(default_factory=list)

    def orphaned_tokens(self, now: datetime, limit: int, after: OrphanCursor | None) -> list[OrphanCandidate]:
        ordered = sorted(self.rows, key=lambda r: r.cursor)
        return [r for r in ordered if after is None or r.cursor > after][:limit]


def issue(world: World, signed: SignedUp) -> UUID:
    issued = world.tokens.handle(TokenRequest(grant_type="client_credentials", client_id=signed.client.client.client_id,
                                              client_secret=signed.client.client_secret))
    return UUID(str(world.validator.validate(issued.access_token)["jti"]))


def delete_without_late_passes(world: World, signed: SignedUp) -> None:
    client = world.app.load(client_aggregate_id(signed.client.client.client_id), Client)
    client.revoke(actor=OWNER)
    world.app.save(client)


def candidate(world: World, token_id: UUID, project_id: UUID, client_id: str) -> OrphanCandidate:
    return OrphanCandidate(token_id=token_id, project_id=project_id, client_id=client_id, issued_at=world.clock.now())


def sweep(world: World, listed: Listed, batch_size: int = 1000) -> OrphanSweep:
    return OrphanSweep(app=world.app, revoker=world.tokens.revoker, index=listed, batch_size=batch_size)


def last_event(world: World, token_id: UUID) -> Any:
    return list(world.app.events.get(token_id))[-1]


def test_a_confirmed_orphan_is_revoked_as_by_the_deletion_and_only_once(world: World) -> None:
    acme = world.sign_up("owner@acme.test")
    orphan = issue(world, acme)
    delete_without_late_passes(world, acme)
    listed = Listed([candidate(world, orphan, acme.project.id, acme.client.client.client_id)])

    result = sweep(world, listed).run()

    assert (result.revoked, result.spared, result.batches, result.more) == (1, 0, 1, False)
    revoked = last_event(world, orphan)
    assert isinstance(revoked, Token.TokenRevoked)
    assert (revoked.reason, revoked.actor) == ("client deleted", "system")
    position = world.position()
    assert sweep(world, listed).run().revoked == 0  # still listed (a lagging model): its stream says revoked
    assert world.position() == position


def test_a_candidate_in_another_project_than_its_client_s_is_spared(world: World) -> None:
    acme, other = world.sign_up("owner@acme.test"), world.sign_up("owner@other.test", project_name="Other")
    token = issue(world, acme)
    delete_without_late_passes(world, acme)
    listed = Listed([candidate(world, token, other.project.id, acme.client.client.client_id)])
    result = sweep(world, listed).run()
    assert (result.revoked, result.spared) == (0, 1)
    assert not world.app.load(token, Token).revoked


def test_a_token_whose_stream_names_another_client_is_spared(world: World) -> None:
    acme, other = world.sign_up("owner@acme.test"), world.sign_up("owner@other.test", project_name="Other")
    delete_without_late_passes(world, acme)
    others = issue(world, other)  # a live client's token, listed under the deleted client by a confused model
    listed = Listed([candidate(world, others, acme.project.id, acme.client.client.client_id)])
    result = sweep(world, listed).run()
    assert (result.revoked, result.spared) == (0, 1)
    assert not world.app.load(others, Token).revoked


def test_a_live_or_unknown_client_s_candidates_are_spared(world: World) -> None:
    acme = world.sign_up("owner@acme.test")
    token = issue(world, acme)
    listed = Listed([candidate(world, token, acme.project.id, acme.client.client.client_id),
                     candidate(world, uuid4(), acme.project.id, "kl_unknown")])
    result = sweep(world, listed).run()
    assert (result.revoked, result.spared) == (0, 2)
    assert not world.app.load(token, Token).revoked


def test_each_deleted_client_gets_a_revocation_of_its_own(world: World) -> None:
    acme, other = world.sign_up("owner@acme.test"), world.sign_up("owner@other.test", project_name="Other")
    tokens = {acme.client.client.client_id: [issue(world, acme) for _ in range(2)],
              other.client.client.client_id: [issue(world, other)]}
    delete_without_late_passes(world, acme)
    delete_without_late_passes(world, other)
    projects = {acme.client.client.client_id: acme.project.id, other.client.client.client_id: other.project.id}
    listed = Listed([candidate(world, t, projects[c], c) for c, ids in tokens.items() for t in ids])

    result = sweep(world, listed, batch_size=2).run()

    assert (result.revoked, result.batches) == (3, 2)
    for ids in tokens.values():
        events = [last_event(world, t) for t in ids]
        assert all(isinstance(e, Token.TokenRevoked) for e in events)
    groups = [{last_event(world, t).revocation_id for t in ids} for ids in tokens.values()]
    assert not groups[0] & groups[1]  # the audit ledger never groups two clients' tokens as one revocation

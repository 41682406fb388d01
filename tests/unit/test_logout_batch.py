"""Logouts decided in batches (``application.oauth.family_revocation``) on the in-memory store: the family a live
refresh token belongs to is revoked exactly as the general path revokes it, and anything else is left to the general
path."""

from dataclasses import replace
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import IntegrityError

from application.oauth.family_revocation import FamilyRevocation, FamilyRevoker
from application.oauth.grants import IssuedTokens, TokenRequest
from domain.client import DASHBOARD, PublicClient
from domain.token import Token, TokenKind
from tests.unit.conftest import PASSWORD, World

EMAIL = "leaver@example.com"


def login(world: World) -> IssuedTokens:
    return world.tokens.handle(TokenRequest(grant_type="password", client_id="dashboard", username=EMAIL,
                                            password=PASSWORD))


def refresh(world: World, issued: IssuedTokens) -> IssuedTokens:
    return world.tokens.handle(TokenRequest(grant_type="refresh_token", client_id="dashboard",
                                            refresh_token=issued.refresh_token))


def refresh_id(issued: IssuedTokens) -> UUID:
    return next(t.id for t in issued.aggregates if t.kind == TokenKind.REFRESH and not t.used)


def decide(world: World, *token_ids: UUID, index: Any = None, client: PublicClient = DASHBOARD) -> list[Any]:
    revoker = FamilyRevoker(app=world.app, clock=world.clock, index=index or world.tokens.revoker.index)
    return revoker.decide_batch([FamilyRevocation(client=client, token_id=i) for i in token_ids])


def revocations(world: World, family_id: UUID | None) -> dict[UUID, Token.TokenRevoked]:
    """The family's TokenRevoked events by token."""
    events = [e for n in world.app.recorder.select_notifications(start=1, limit=10**6)
              for e in world.app.events.get(n.originator_id, gt=n.originator_version - 1, lte=n.originator_version)]
    return {e.originator_id: e for e in events if isinstance(e, Token.TokenRevoked) and e.family_id == family_id}


def decided_events(outcome: Any) -> list[Token.TokenRevoked]:
    """The events a batch outcome hands the committer (once: they are collected)."""
    return [e for aggregate in outcome.aggregates for e in aggregate.collect_events()]


@pytest.fixture
def signed_up(world: World) -> World:
    world.sign_up(EMAIL)
    return world


def test_a_logout_revokes_the_family_as_the_general_path_does(signed_up: World) -> None:
    world = signed_up
    ours, theirs = login(world), login(world)
    ours, theirs = refresh(world, ours), refresh(world, theirs)  # each family: a used pair and a live pair

    [outcome] = decide(world, refresh_id(ours))
    assert outcome.decided and outcome.revoked == 3  # the live refresh token and both live access tokens
    assert world.app.load(refresh_id(ours), Token).version == 1  # nothing saved: the committer saves the batch
    world.app.save(*decided_events(outcome))
    world.tokens.revoker.revoke_one(world.app.load(refresh_id(theirs), Token), reason="revoked by client",
                                    actor="client:dashboard")  # the general path, on the other family

    batched = revocations(world, ours.aggregates[0].family_id)
    general = revocations(world, theirs.aggregates[0].family_id)

    def shape(events: dict[UUID, Token.TokenRevoked]) -> list[tuple[Any, ...]]:
        return sorted((e.originator_version, e.reason, e.actor, e.client_id, e.project_id) for e in events.values())

    assert shape(batched) == shape(general) and len(batched) == 3
    assert len({e.revocation_id for e in batched.values()}) == 1  # one command: one revocation id
    assert all(e.user_id == ours.aggregates[1].user_id for e in batched.values())
    used = ours.aggregates[2]  # a rotation saves the used token last
    assert used.id not in batched and world.app.load(used.id, Token).used  # the used token stays used
    with pytest.raises(Exception, match="revoked"):
        refresh(world, ours)


def test_a_rotation_the_model_holds_only_half_of_is_revoked_whole(signed_up: World) -> None:
    world = signed_up
    rotated = refresh(world, login(world))
    new_refresh, new_access, _ = rotated.aggregates
    index = world.tokens.revoker.index

    class HalfIndex:  # has applied the new refresh token, not yet the access token saved after it
        def families_as_of(self, token_ids: Any) -> dict[Any, Any]:
            return {i: replace(s, live=[t for t in s.live if t != new_access.id])
                    for i, s in index.families_as_of(token_ids).items()}

    [outcome] = decide(world, new_refresh.id, index=HalfIndex())
    # Through the parent's stream:
    assert {e.originator_id for e in decided_events(outcome)} >= {new_refresh.id, new_access.id}


def test_anything_else_is_left_to_the_general_path(signed_up: World) -> None:
    world = signed_up
    first = login(world)
    used = refresh_id(first)
    current = refresh(world, first)
    expiring = login(world)

    class LaggingIndex:  # has not applied the presented token's issuance yet
        def families_as_of(self, token_ids: Any) -> dict[Any, Any]:
            return {}

    assert not decide(world, used)[0].decided  # a replay: reuse detection is the general path's
    assert not decide(world, uuid4())[0].decided  # unknown
    assert not decide(world, refresh_id(current), index=LaggingIndex())[0].decided
    assert not decide(world, refresh_id(current), client=replace(DASHBOARD, client_id="another-app"))[0].decided
    twin, again = decide(world, refresh_id(current), refresh_id(current))
    assert twin.decided and not again.decided
    world.clock.current = max(t.expires_at for t in expiring.aggregates if t.kind == TokenKind.REFRESH)
    assert not decide(world, refresh_id(expiring))[0].decided  # expired: nothing to revoke, the general path says so


def test_a_rotation_after_the_decision_makes_its_save_conflict(signed_up: World) -> None:
    """The batch decides on what it read; a refresh committed before the batch's save used the presented token up
    (and issued a pair the decision never saw), so the save must fail and the caller fall back."""
    world = signed_up
    issued = login(world)
    [outcome] = decide(world, refresh_id(issued))
    refresh(world, issued)
    with pytest.raises(IntegrityError):
        world.app.save(*decided_events(outcome))


def test_logouts_of_several_families_in_one_batch_each_revoke_their_own(signed_up: World) -> None:
    world = signed_up
    first, second = refresh(world, login(world)), login(world)
    outcomes = decide(world, refresh_id(first), refresh_id(second))
    assert [o.revoked for o in outcomes] == [3, 2]
    for outcome, issued in zip(outcomes, (first, second), strict=True):
        assert {e.family_id for e in decided_events(outcome)} == {issued.aggregates[0].family_id}


def test_a_rotation_between_the_batch_reads_leaves_the_logout_to_the_general_path(signed_up: World) -> None:
    """The model is read first and the streams after: a refresh committed in between has used the presented token up
    and issued a pair the model does not list, and the batch leaves it to the general path."""
    world = signed_up
    issued = login(world)
    index = world.tokens.revoker.index

    class RotatingIndex:
        def families_as_of(self, token_ids: Any) -> dict[Any, Any]:
            selections = index.families_as_of(token_ids)
            refresh(world, issued)  # committed after the model was read, before the streams are
            return selections

    [outcome] = decide(world, refresh_id(issued), index=RotatingIndex())
    assert not outcome.decided  # the stream says used: reuse detection and the rotated pair are the general path's


def test_a_failed_read_leaves_the_batch_to_the_general_path(signed_up: World) -> None:
    class BrokenIndex:
        def families_as_of(self, token_ids: Any) -> dict[Any, Any]:
            raise ConnectionError("the read model's database is gone")

    issued = login(signed_up)
    assert [o.decided for o in decide(signed_up, refresh_id(issued), uuid4(), index=BrokenIndex())] == [False, False]

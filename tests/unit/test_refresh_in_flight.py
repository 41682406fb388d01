"""A refresh that loses to a concurrent one is refused without revoking anything; a replay is reuse
(application.oauth.in_flight).

The world's clock is fixed, so the instants are exact: the rotation is decided at T, answered at T + 5 ms, and the
losing presentation is received at a chosen instant around them.
"""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from uuid import uuid4

import pytest

from application.oauth.errors import InvalidGrant
from application.oauth.grants import TokenRequest
from application.oauth.in_flight import MemoryRotationAnswers, in_flight
from application.oauth.tokens import IssuedTokens
from domain import refusal as why
from domain.token import Token, TokenKind
from tests.unit.conftest import PASSWORD, World

EMAIL = "ada@example.test"
ANSWERED_AFTER = timedelta(milliseconds=5)


def request(refresh_token: str | None, received_at: datetime | None) -> TokenRequest:
    return TokenRequest(grant_type="refresh_token", client_id="dashboard", refresh_token=refresh_token,
                        received_at=received_at)


@pytest.fixture
def answering(world: World) -> World:
    """The world, with its token endpoint recording rotations' answer instants."""
    return replace(world, tokens=replace(world.tokens, answers=MemoryRotationAnswers()))


def rotate(world: World) -> tuple[IssuedTokens, IssuedTokens, datetime]:
    """Logs in and rotates once: (the login, the rotation, the rotation's decision instant)."""
    world.sign_up(EMAIL)
    issued = world.tokens.handle(TokenRequest(grant_type="password", client_id="dashboard", username=EMAIL,
                                              password=PASSWORD))
    world.clock.advance(seconds=1)
    decided = world.clock.now()
    winner = world.tokens.decide(request(issued.refresh_token, decided))
    world.tokens.save(*winner.aggregates)
    world.clock.advance(seconds=ANSWERED_AFTER.total_seconds())
    world.tokens.answered(winner)
    world.clock.advance(seconds=1)  # the loser is decided later still: only its receipt instant matters
    return issued, winner, decided


def family_live(world: World, winner: IssuedTokens) -> bool:
    pair = [world.app.load(t.id, Token) for t in winner.aggregates[:2]]  # the new refresh and access tokens
    return all(not t.revoked for t in pair) and world.app.load(winner.aggregates[0].id, Token).refusal(
        world.clock.now()) is None


def reuse_detected(world: World, token_id: object) -> bool:
    return any(type(e).__name__ == "RefreshTokenReuseDetected"
               for e in world.app.repository.event_store.get(token_id))  # type: ignore[arg-type]


@pytest.mark.parametrize("received", [timedelta(milliseconds=-3), timedelta(0), timedelta(milliseconds=4)])
def test_a_presentation_received_before_the_rotation_was_answered_revokes_nothing(answering: World,
                                                                                  received: timedelta) -> None:
    """Sent before its client could have seen the winner's answer (before the decision, or between the decision
    and the answer): refused as the loser of a race, and the winner's new pair stays good."""
    issued, winner, decided = rotate(answering)
    with pytest.raises(InvalidGrant) as refused:
        answering.tokens.handle(request(issued.refresh_token, decided + received))
    assert refused.value.reason == why.REFRESH_TOKEN_CONFLICT
    assert family_live(answering, winner)
    assert not reuse_detected(answering, winner.rotated)
    answering.tokens.handle(request(winner.refresh_token, answering.clock.now()))  # the winner refreshes on


def test_a_presentation_received_after_the_answer_is_reuse(answering: World) -> None:
    """Received after the winner's answer left: a replay of a used token, which revokes the whole family."""
    issued, winner, decided = rotate(answering)
    with pytest.raises(InvalidGrant) as refused:
        answering.tokens.handle(request(issued.refresh_token, decided + ANSWERED_AFTER + timedelta(microseconds=1)))
    assert refused.value.reason == why.REFRESH_TOKEN_REUSED
    assert reuse_detected(answering, winner.rotated)
    assert not family_live(answering, winner)


def test_reuse_is_recorded_once_per_token(answering: World) -> None:
    """The first replay records the reuse and ends the family; later replays of the same used token are refused
    the same way but record no further detection (each would otherwise be an event, its ledger entries and a family
    sweep, as often as whoever holds the old token likes)."""
    issued, winner, decided = rotate(answering)
    late = decided + ANSWERED_AFTER + timedelta(seconds=1)
    for _ in range(3):
        with pytest.raises(InvalidGrant) as refused:
            answering.tokens.handle(request(issued.refresh_token, late))
        assert refused.value.reason == why.REFRESH_TOKEN_REUSED
    stream = answering.app.repository.event_store.get(winner.rotated)  # type: ignore[arg-type]
    assert [type(e).__name__ for e in stream].count("RefreshTokenReuseDetected") == 1
    assert answering.app.load(winner.rotated, Token).reuse_detected  # type: ignore[arg-type]
    assert not family_live(answering, winner)


def test_two_racing_replays_record_one_detection(answering: World) -> None:
    """Two replays decided together both see the token undetected; the one saved second finds the detection on the
    stream it reloads and records nothing more."""
    issued, winner, _ = rotate(answering)
    stale = answering.app.load(winner.rotated, Token)  # type: ignore[arg-type]  # as the second replay read it
    with pytest.raises(InvalidGrant):
        answering.tokens.handle(request(issued.refresh_token, answering.clock.now()))
    answering.tokens.refuse_reuse(stale, None)
    stream = answering.app.repository.event_store.get(winner.rotated)  # type: ignore[arg-type]
    assert [type(e).__name__ for e in stream].count("RefreshTokenReuseDetected") == 1


def test_without_a_recorded_answer_only_the_decision_instant_counts(world: World) -> None:
    """No answer instant (none recorded, or lost): received after the decision is reuse, the strict side; received
    before it is still a race's loser."""
    issued, winner, decided = rotate(world)  # the world's endpoint records no answers
    with pytest.raises(InvalidGrant) as refused:
        world.tokens.handle(request(issued.refresh_token, decided - timedelta(microseconds=1)))
    assert refused.value.reason == why.REFRESH_TOKEN_CONFLICT and family_live(world, winner)
    with pytest.raises(InvalidGrant) as refused:
        world.tokens.handle(request(issued.refresh_token, decided + timedelta(milliseconds=1)))
    assert refused.value.reason == why.REFRESH_TOKEN_REUSED and not family_live(world, winner)


def test_a_presentation_without_a_receipt_instant_is_reuse(answering: World) -> None:
    """A caller that does not say when it received the request (no HTTP in front) cannot claim a race."""
    issued, winner, _ = rotate(answering)
    with pytest.raises(InvalidGrant) as refused:
        answering.tokens.handle(request(issued.refresh_token, None))
    assert refused.value.reason == why.REFRESH_TOKEN_REUSED
    assert not family_live(answering, winner)


@pytest.fixture
def lenient(answering: World) -> World:
    """The answering world, with a two-second leeway for stragglers."""
    lifetimes = replace(answering.tokens.lifetimes, refresh_reuse_leeway=2)
    return replace(answering, tokens=replace(answering.tokens, lifetimes=lifetimes))


@pytest.mark.parametrize("late", [timedelta(microseconds=1), timedelta(seconds=1), timedelta(seconds=2) -
                                  timedelta(microseconds=1)])
def test_within_the_leeway_a_straggler_revokes_nothing(lenient: World, late: timedelta) -> None:
    """Received after the answer left but within the deployment's leeway: refused as a race's loser."""
    issued, winner, decided = rotate(lenient)
    with pytest.raises(InvalidGrant) as refused:
        lenient.tokens.handle(request(issued.refresh_token, decided + ANSWERED_AFTER + late))
    assert refused.value.reason == why.REFRESH_TOKEN_CONFLICT
    assert family_live(lenient, winner) and not reuse_detected(lenient, winner.rotated)


def test_past_the_leeway_a_presentation_is_reuse(lenient: World) -> None:
    issued, winner, decided = rotate(lenient)
    with pytest.raises(InvalidGrant) as refused:
        lenient.tokens.handle(request(issued.refresh_token, decided + ANSWERED_AFTER + timedelta(seconds=2)))
    assert refused.value.reason == why.REFRESH_TOKEN_REUSED
    assert not family_live(lenient, winner)


def test_the_leeway_counts_from_the_decision_when_no_answer_is_recorded(world: World) -> None:
    lifetimes = replace(world.tokens.lifetimes, refresh_reuse_leeway=2)
    strict_record = replace(world, tokens=replace(world.tokens, lifetimes=lifetimes))  # records no answers
    issued, winner, decided = rotate(strict_record)
    with pytest.raises(InvalidGrant) as refused:
        strict_record.tokens.handle(request(issued.refresh_token, decided + timedelta(seconds=1)))
    assert refused.value.reason == why.REFRESH_TOKEN_CONFLICT and family_live(strict_record, winner)
    with pytest.raises(InvalidGrant) as refused:
        strict_record.tokens.handle(request(issued.refresh_token, decided + timedelta(seconds=2)))
    assert refused.value.reason == why.REFRESH_TOKEN_REUSED and not family_live(strict_record, winner)


def test_a_pending_rotation_is_in_flight_whatever_the_leeway() -> None:
    """The pending mark is the latest instant there is: adding a leeway to it must not overflow."""
    token = SimpleNamespace(id=uuid4(), used_at=datetime(2026, 12, 6, tzinfo=UTC))  # what in_flight reads
    answers = MemoryRotationAnswers()
    answers.unanswered(token.id)
    assert in_flight(token, datetime(2026, 12, 7, tzinfo=UTC), answers, timedelta(seconds=60))  # type: ignore[arg-type]


def test_the_rotation_records_its_decision_instant(answering: World) -> None:
    issued, winner, decided = rotate(answering)
    used = answering.app.load(winner.rotated, Token)  # type: ignore[arg-type]
    assert used.used and used.used_at == decided
    assert winner.rotated == next(t.id for t in issued.aggregates if t.kind == TokenKind.REFRESH)

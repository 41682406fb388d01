"""Expiry on the in-memory store: TokenExpired and ClientSecretExpired decided on each aggregate's stream."""

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from application.expiry import DueToken, SecretSweep, TokenSweep
from application.oauth.grants import TokenRequest
from domain.client import Client
from domain.errors import InvariantViolated
from domain.token import Token
from tests.unit.conftest import World


def issue(world: World, count: int = 1) -> list[UUID]:
    """Issues ``count`` client_credentials tokens of a new project; returns their ids."""
    signed = world.sign_up(f"expiry-{world.position()}@example.com")
    before = world.position()
    for _ in range(count):
        world.tokens.handle(TokenRequest(grant_type="client_credentials", client_id=signed.client.client.client_id,
                                         client_secret=signed.client.client_secret))
    return [n.originator_id for n in world.app.recorder.select_notifications(start=before + 1, limit=10 ** 6)
            if n.topic.endswith("Token.TokenIssued")]


class StoreDue:
    """The sweep's candidate query computed from the store: tokens not yet ended, past expiry, by (expiry, id)."""

    def __init__(self, world: World, ids: list[UUID]) -> None:
        self.world, self.ids = world, ids

    def due_for_expiry(self, now: datetime, limit: int, after: Any) -> list[DueToken]:
        tokens = [self.world.app.load(i, Token) for i in self.ids]
        due = sorted((DueToken(token_id=t.id, expires_at=t.expires_at, project_id=t.project_id, client_id=t.client_id,
                               kind=str(t.kind)) for t in tokens if t.expirable(now)), key=lambda d: d.cursor)
        return [d for d in due if after is None or d.cursor > after][:limit]


def topics(world: World, suffix: str) -> list[Any]:
    return [n for n in world.app.recorder.select_notifications(start=1, limit=10 ** 6) if n.topic.endswith(suffix)]


def test_a_token_expires_only_past_its_expiry_and_once(world: World) -> None:
    token = world.app.load(issue(world)[0], Token)
    with pytest.raises(InvariantViolated):
        token.expire(now=token.expires_at - timedelta(seconds=1), actor="system")
    token.expire(now=token.expires_at, actor="system")
    assert token.expired and not token.is_live(token.expires_at - timedelta(seconds=1))
    with pytest.raises(InvariantViolated):
        token.expire(now=token.expires_at, actor="system")


def test_a_revoked_token_is_not_expired(world: World) -> None:
    token = world.app.load(issue(world)[0], Token)
    token.revoke(reason="test", actor="system")
    assert not token.expirable(token.expires_at + timedelta(days=1))


def test_the_sweep_records_token_expired_in_batches_and_is_idempotent(world: World) -> None:
    ids = issue(world, 7)
    world.clock.advance(seconds=world.settings.lifetimes.client_access_token_ttl)
    sweep = TokenSweep(app=world.app, clock=world.clock, index=StoreDue(world, ids), batch_size=3)
    result = sweep.run()
    assert (result.expired, result.batches, result.more) == (7, 3, False)
    events = topics(world, "Token.TokenExpired")
    assert sorted(e.originator_id for e in events) == sorted(ids)
    assert sweep.run().expired == 0
    assert len(topics(world, "Token.TokenExpired")) == 7


def test_the_sweep_stops_at_its_bound_and_the_next_run_continues(world: World) -> None:
    ids = issue(world, 5)
    world.clock.advance(seconds=world.settings.lifetimes.client_access_token_ttl)
    sweep = TokenSweep(app=world.app, clock=world.clock, index=StoreDue(world, ids), batch_size=2, max_batches=1)
    assert (sweep.run().expired, sweep.run().expired, sweep.run().expired, sweep.run().more) == (2, 2, 1, False)


def test_the_sweep_leaves_unexpired_and_revoked_tokens_alone(world: World) -> None:
    ids = issue(world, 3)
    revoked = world.app.load(ids[0], Token)
    revoked.revoke(reason="test", actor="system")
    world.app.save(revoked)
    sweep = TokenSweep(app=world.app, clock=world.clock, index=StoreDue(world, ids))
    assert sweep.expire_batch(ids, world.clock.now()) == 0
    world.clock.advance(seconds=world.settings.lifetimes.client_access_token_ttl)
    assert sweep.expire_batch(ids, world.clock.now()) == 2


class RacingApp:
    """The application, but another sweep expires the same tokens between this sweep's read and its save."""

    def __init__(self, world: World, rival: TokenSweep) -> None:
        self._world, self._rival, self._raced = world, rival, False

    def find_many(self, ids: Any, kind: Any) -> Any:
        found = self._world.app.find_many(ids, kind)
        if not self._raced:
            self._raced = True
            self._rival.expire_batch(list(ids), self._world.clock.now())
        return found

    def __getattr__(self, name: str) -> Any:
        return getattr(self._world.app, name)


def test_two_sweeps_racing_on_the_same_tokens_record_each_expiry_once(world: World) -> None:
    ids = issue(world, 4)
    world.clock.advance(seconds=world.settings.lifetimes.client_access_token_ttl)
    rival = TokenSweep(app=world.app, clock=world.clock, index=StoreDue(world, ids))
    racing = TokenSweep(app=RacingApp(world, rival), clock=world.clock, index=StoreDue(world, ids))  # type: ignore[arg-type]
    assert racing.expire_batch(ids, world.clock.now()) == 0  # the conflict: every token was expired by the rival
    assert len(topics(world, "Token.TokenExpired")) == 4


def test_token_expired_carries_what_a_notification_needs(world: World) -> None:
    token = world.app.load(issue(world)[0], Token)
    token.expire(now=token.expires_at, actor="system")
    event = token.collect_events()[-1]
    assert (event.project_id, event.client_id, event.kind, event.expires_at, event.actor) == (
        token.project_id, token.client_id, "access", token.expires_at, "system")


class ClientDue:
    def __init__(self, world: World, client_ids: list[str]) -> None:
        self.world, self.client_ids = world, client_ids

    def due_secrets(self, now: datetime, limit: int, after: Any) -> list[tuple[datetime, str]]:
        clients = [self.world.app.load(Client.create_id(c), Client) for c in self.client_ids]
        return sorted((now, c.client_id) for c in clients if c.expirable_secrets(now))[:limit]


def test_client_secrets_expire_current_and_previous_after_grace(world: World) -> None:
    signed = world.sign_up("secrets@example.com")
    client = world.app.load(signed.client.client.id, Client)
    sweep = SecretSweep(app=world.app, clock=world.clock, index=ClientDue(world, [client.client_id]))
    assert sweep.run().expired == 0
    client.rotate_secret(secret_hash="h2", secret_hint="kl_...2", previous_secret_expires_at=world.clock.now()
                         + timedelta(hours=1), secret_expires_at=world.clock.now() + timedelta(days=2), actor="system")
    world.app.save(client)
    world.clock.advance(hours=1)
    assert sweep.run().expired == 1  # the previous secret, its grace over
    world.clock.advance(days=2)
    assert sweep.run().expired == 1  # the current one
    assert sweep.run().expired == 0
    events = topics(world, "Client.ClientSecretExpired")
    assert [world.app.mapper.to_domain_event(e).which for e in events] == ["previous", "current"]
    assert not world.app.load(client.id, Client).expirable_secrets(world.clock.now() + timedelta(days=999))


def test_a_revoked_clients_secrets_are_not_expired(world: World) -> None:
    signed = world.sign_up("revoked-secrets@example.com")
    client = world.app.load(signed.client.client.id, Client)
    client.revoke(actor="system")
    world.app.save(client)
    assert client.expirable_secrets(client.secret_expires_at + timedelta(days=1)) == []
    with pytest.raises(InvariantViolated):
        client.expire_secrets(now=client.secret_expires_at, actor="system")


def test_the_bulk_path_builds_the_same_event_as_the_aggregate(world: World) -> None:
    token = world.app.load(issue(world)[0], Token)
    now = token.expires_at + timedelta(seconds=1)
    built = Token.expiry_of_issued(token_id=token.id, project_id=token.project_id, client_id=token.client_id,
                                   kind=str(token.kind), expires_at=token.expires_at, now=now, actor="system")
    token.expire(now=now, actor="system")
    recorded = token.collect_events()[-1]
    fields = ("originator_id", "originator_version", "project_id", "client_id", "kind", "expires_at", "expired_at",
              "actor")
    assert [getattr(built, f) for f in fields] == [getattr(recorded, f) for f in fields]
    with pytest.raises(InvariantViolated):
        Token.expiry_of_issued(token_id=token.id, project_id=None, client_id="c", kind="access",
                               expires_at=now, now=now - timedelta(seconds=1), actor="system")


def test_a_secret_is_refused_at_its_expiry_instant_with_no_sweep(world: World) -> None:
    from application.oauth.errors import InvalidClient  # noqa: PLC0415

    signed = world.sign_up("instant@example.com")
    request = TokenRequest(grant_type="client_credentials", client_id=signed.client.client.client_id,
                           client_secret=signed.client.client_secret)
    world.clock.current = signed.client.client.secret_expires_at - timedelta(microseconds=1)
    assert world.tokens.handle(request).access_token
    world.clock.current = signed.client.client.secret_expires_at
    with pytest.raises(InvalidClient):
        world.tokens.handle(request)
    assert topics(world, "Client.ClientSecretExpired") == []  # nothing was recorded: the instant alone decides

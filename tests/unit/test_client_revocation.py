"""The batched revocation of client_credentials tokens on the in-memory store: decided on stream versions, the
event exactly what ``Token.revoke`` records, and anything that moved left to the general path."""

from uuid import UUID

from application.oauth.client_revocation import ClientTokenRevocation, ClientTokenRevoker
from application.oauth.grants import TokenRequest
from domain.client import Client
from domain.token import Token
from infrastructure.batching import RequestRouter
from tests.unit.conftest import World


def issued(world: World) -> tuple[Client, Token]:
    signed = world.sign_up(f"revoker-{world.position()}@example.com")
    before = world.position()
    world.tokens.handle(TokenRequest(grant_type="client_credentials", client_id=signed.client.client.client_id,
                                     client_secret=signed.client.client_secret))
    token_id = next(n.originator_id for n in world.app.recorder.select_notifications(start=before + 1, limit=10)
                    if n.topic.endswith("Token.TokenIssued"))
    return world.app.load(signed.client.client.id, Client), world.app.load(token_id, Token)


def request(client: Client, token: Token) -> ClientTokenRevocation:
    return ClientTokenRevocation(client=client, token_id=token.id, expires_at=token.expires_at)


def test_a_live_token_gets_the_event_revoke_would_record(world: World) -> None:
    client, token = issued(world)
    revoker = ClientTokenRevoker(app=world.app, clock=world.clock)
    [outcome] = revoker.decide_batch([request(client, token)])
    assert outcome.decided and outcome.revoked == 1
    [event] = [e for holder in outcome.aggregates for e in holder.collect_events()]
    expected = world.app.load(token.id, Token)
    expected.revoke(reason="revoked by client", actor=f"client:{client.client_id}", revocation_id=event.revocation_id)
    [pending] = expected.collect_events()
    assert type(event) is type(pending) and event.originator_version == pending.originator_version == 2
    assert {k: v for k, v in vars(event).items() if k != "timestamp"} == \
        {k: v for k, v in vars(pending).items() if k != "timestamp"}


def test_moved_streams_twins_and_stale_clients_are_left_undecided(world: World) -> None:
    client, token = issued(world)
    _, revoked = issued(world)
    other_client, other = issued(world)
    revoked.revoke(reason="test", actor="system")
    world.app.save(revoked)
    revoker = ClientTokenRevoker(app=world.app, clock=world.clock)
    outcomes = revoker.decide_batch([request(client, token), request(client, token), request(client, revoked)])
    assert [o.decided for o in outcomes] == [True, False, False]
    deleted = world.app.load(other_client.id, Client)
    deleted.revoke(actor="system")  # the client's stream moves on: the copy held is stale
    world.app.save(deleted)
    [stale] = revoker.decide_batch([request(other_client, other)])
    assert not stale.decided


def test_an_expired_token_needs_no_revocation(world: World) -> None:
    client, token = issued(world)
    world.clock.current = token.expires_at
    [outcome] = ClientTokenRevoker(app=world.app, clock=world.clock).decide_batch([request(client, token)])
    assert outcome.decided and outcome.revoked == 0 and not outcome.aggregates


def test_the_router_hands_each_kind_to_its_decider_in_order() -> None:
    router = RequestRouter({int: lambda xs: [x * 10 for x in xs], str: lambda xs: [x.upper() for x in xs]})
    assert router([1, "a", 2, "b"]) == [10, "A", 20, "B"]
    [refused] = router([UUID(int=1)])
    assert isinstance(refused, TypeError)

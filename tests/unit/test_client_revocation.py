"""The batched revocation of client_credentials tokens, and of dashboard access tokens presented by their holder,
on the in-memory store: decided on each token's stream (whose it is, whether it is live), and anything that is not
plainly such a revocation left to the general path."""

from uuid import UUID, uuid4

import pytest

from application.oauth.client_revocation import ClientTokenRevocation, ClientTokenRevoker
from application.oauth.grants import TokenRequest
from domain.client import DASHBOARD, Client
from domain.token import Token
from infrastructure.batching import RequestRouter
from tests.unit.conftest import PASSWORD, World


def issued(world: World) -> tuple[Client, Token]:
    signed = world.sign_up(f"revoker-{world.position()}@example.com")
    before = world.position()
    world.tokens.handle(TokenRequest(grant_type="client_credentials", client_id=signed.client.client.client_id,
                                     client_secret=signed.client.client_secret))
    token_id = next(n.originator_id for n in world.app.recorder.select_notifications(start=before + 1, limit=10)
                    if n.topic.endswith("Token.TokenIssued"))
    return world.app.load(signed.client.client.id, Client), world.app.load(token_id, Token)


def decide(world: World, *requests: ClientTokenRevocation) -> list:
    return ClientTokenRevoker(app=world.app, clock=world.clock).decide_batch(list(requests))


def test_a_live_token_of_the_client_is_revoked_on_its_stream(world: World) -> None:
    client, token = issued(world)
    [outcome] = decide(world, ClientTokenRevocation(client=client, token_id=token.id))
    assert outcome.decided and outcome.revoked == 1
    [aggregate] = outcome.aggregates
    [event] = aggregate.collect_events()
    assert isinstance(event, Token.TokenRevoked) and event.originator_version == 2
    assert (event.reason, event.actor, event.client_id, event.project_id) == (
        "revoked by client", f"client:{client.client_id}", client.client_id, client.project_id)
    assert event.revocation_id is not None
    assert world.app.load(token.id, Token).version == 1  # nothing saved: the committer saves the batch


def test_revoked_and_expired_tokens_need_nothing(world: World) -> None:
    client, token = issued(world)
    _, later = issued(world)
    token.revoke(reason="test", actor="system")
    world.app.save(token)
    [revoked] = decide(world, ClientTokenRevocation(client=client, token_id=token.id))
    assert revoked.decided and revoked.revoked == 0 and not revoked.aggregates
    world.clock.current = later.expires_at
    later_client = world.app.load(Client.create_id(later.client_id), Client)
    [expired] = decide(world, ClientTokenRevocation(client=later_client, token_id=later.id))
    assert expired.decided and expired.revoked == 0


def test_other_clients_tokens_logins_unknown_ids_twins_and_stale_clients_are_undecided(world: World) -> None:
    client, token = issued(world)
    other_client, other = issued(world)
    signed = world.sign_up("login-revoker@example.com")
    login = world.tokens.handle(TokenRequest(grant_type="password", client_id="dashboard",
                                             username=signed.user.email, password=PASSWORD))
    dashboard_id = UUID(world.validator.claims(login.access_token)["jti"])
    outcomes = decide(world, ClientTokenRevocation(client=client, token_id=token.id),
                      ClientTokenRevocation(client=client, token_id=token.id),
                      ClientTokenRevocation(client=client, token_id=other.id),
                      ClientTokenRevocation(client=client, token_id=dashboard_id),
                      ClientTokenRevocation(client=client, token_id=uuid4()))
    assert [o.decided for o in outcomes] == [True, False, False, False, False]
    deleted = world.app.load(other_client.id, Client)
    deleted.revoke(actor="system")  # the client's stream moves on: the copy held is stale
    world.app.save(deleted)
    [stale] = decide(world, ClientTokenRevocation(client=other_client, token_id=other.id))
    assert not stale.decided


def dashboard_login(world: World, email: str) -> tuple[str, UUID, UUID]:
    """A login's access token, its id and its user's."""
    signed = world.sign_up(email)
    login = world.tokens.handle(TokenRequest(grant_type="password", client_id="dashboard",
                                             username=signed.user.email, password=PASSWORD))
    return login.access_token, UUID(world.validator.claims(login.access_token)["jti"]), signed.user.id


def test_the_dashboard_revokes_an_access_token_only_when_presented_the_very_string_issued(world: World) -> None:
    value, access, user_id = dashboard_login(world, "dashboard-revoker@example.com")
    other_value, _, _ = dashboard_login(world, "dashboard-other@example.com")
    _, project_token = issued(world)
    hashed = world.secrets.hash
    outcomes = decide(world, ClientTokenRevocation(client=DASHBOARD, token_id=access),
                      ClientTokenRevocation(client=DASHBOARD, token_id=access, value_hash=hashed(other_value)),
                      ClientTokenRevocation(client=DASHBOARD, token_id=access, value_hash=hashed(value + "x")),
                      ClientTokenRevocation(client=DASHBOARD, token_id=project_token.id, value_hash=hashed(value)),
                      ClientTokenRevocation(client=DASHBOARD, token_id=access, value_hash=hashed(value)))
    # No proof, another login's token, an altered string, not the dashboard's: left to the general path.
    assert [o.decided for o in outcomes] == [False, False, False, False, True]
    [aggregate] = outcomes[-1].aggregates
    [event] = aggregate.collect_events()
    assert isinstance(event, Token.TokenRevoked) and event.originator_id == access
    assert (event.actor, event.client_id, event.user_id) == ("client:dashboard", "dashboard", user_id)


def test_a_dashboard_token_recorded_without_its_hash_is_left_to_the_general_path(world: World) -> None:
    value, access, _ = dashboard_login(world, "dashboard-older@example.com")
    older = world.app.load(access, Token)
    assert older.value_hash == world.secrets.hash(value)  # what a login's access token records
    unproven = Token(token_id=uuid4(), kind=older.kind, project_id=None, client_id=older.client_id,
                     user_id=older.user_id, scope=older.scope, grant_type=older.grant_type, issued_at=older.issued_at,
                     expires_at=older.expires_at, family_id=older.family_id, parent_id=None, actor="user:u",
                     family_expires_at=None, value_hash=None, account_version=None)
    world.app.save(unproven)
    [outcome] = decide(world, ClientTokenRevocation(client=DASHBOARD, token_id=unproven.id,
                                                    value_hash=world.secrets.hash(value)))
    assert not outcome.decided


def test_a_batch_mixes_project_clients_and_the_dashboard_each_checked_on_its_own_terms(world: World) -> None:
    client, token = issued(world)
    stale_client, stale_token = issued(world)
    moved = world.app.load(stale_client.id, Client)
    moved.revoke(actor="system")
    world.app.save(moved)
    value, access, _ = dashboard_login(world, "mixed-batch@example.com")
    proof = world.secrets.hash(value)
    outcomes = decide(world, ClientTokenRevocation(client=stale_client, token_id=stale_token.id),
                      ClientTokenRevocation(client=DASHBOARD, token_id=access, value_hash=proof),
                      ClientTokenRevocation(client=client, token_id=token.id),
                      ClientTokenRevocation(client=DASHBOARD, token_id=access, value_hash=proof))
    assert [(o.decided, o.revoked) for o in outcomes] == [(False, 0), (True, 1), (True, 1), (False, 0)]  # a twin


def test_a_failed_read_leaves_the_batch_to_the_general_path(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The group committer's batch also holds other callers' token requests: a revocation batch whose read fails
    leaves its requests undecided (the general path answers them, with a 503 if the store is down) instead of
    failing the whole batch."""
    client, token = issued(world)

    def gone(*_: object) -> None:
        raise ConnectionError("the store is gone")

    monkeypatch.setattr(world.app, "streams_and_versions", gone)
    outcomes = decide(world, ClientTokenRevocation(client=client, token_id=token.id),
                      ClientTokenRevocation(client=client, token_id=uuid4()))
    assert [o.decided for o in outcomes] == [False, False]


def test_the_router_hands_each_kind_to_its_decider_in_order() -> None:
    router = RequestRouter({int: lambda xs: [x * 10 for x in xs], str: lambda xs: [x.upper() for x in xs]})
    assert router([1, "a", 2, "b"]) == [10, "A", 20, "B"]
    [refused] = router([UUID(int=1)])
    assert isinstance(refused, TypeError)

"""The token endpoint's client authentication and the client_credentials grant, on the in-memory store."""

from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest

from application.accounts import CreateClient, SignedUp
from application.oauth.errors import InvalidClient, InvalidScope, UnauthorizedClient, UnsupportedGrantType
from application.oauth.grants import TokenRequest
from domain.client import Client
from domain.token import Token, TokenKind
from tests.unit.conftest import PASSWORD, T0, World, jwt_parts


def cc(signed: SignedUp, **changes: Any) -> TokenRequest:
    fields = {"grant_type": "client_credentials", "client_id": signed.client.client.client_id,
              "client_secret": signed.client.client_secret, **changes}
    return TokenRequest(**fields)


@pytest.fixture
def acme(world: World) -> SignedUp:
    return world.sign_up("owner@acme.test")


class ReadCounter:
    """Counts reads of aggregate streams from the event store."""

    def __init__(self, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        original = world.app.recorder.select_events

        def counting(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(world.app.recorder, "select_events", counting)


def test_client_credentials_issues_a_project_token(world: World, acme: SignedUp) -> None:
    issued = world.tokens.handle(cc(acme))
    header, _ = jwt_parts(issued.access_token)
    claims = world.validator.validate(issued.access_token)
    client_id = acme.client.client.client_id
    assert header == {"alg": "ES256", "kid": world.keys.snapshot.active_kid, "typ": "at+jwt"}
    assert claims["iss"] == "https://auth.example.test"
    assert claims["aud"] == "https://auth.example.test/v1"
    assert (claims["sub"], claims["client_id"]) == (client_id, client_id)
    assert claims["project_id"] == str(acme.project.id)
    assert claims["scope"] == "clients:read project:read tokens:read"
    assert claims["exp"] - claims["iat"] == 3600 == issued.expires_in
    assert issued.refresh_token is None
    assert issued.response() == {"access_token": issued.access_token, "token_type": "Bearer", "expires_in": 3600,
                                 "scope": "clients:read project:read tokens:read"}
    token = world.app.load(UUID(claims["jti"]), Token)
    assert (token.kind, token.project_id, token.client_id, token.user_id) == (TokenKind.ACCESS, acme.project.id,
                                                                                client_id, None)
    assert token.grant_type == "client_credentials"
    assert token.expires_at == T0 + timedelta(hours=1)
    assert token.is_live(T0)


def test_decide_does_not_save_but_handle_does(world: World, acme: SignedUp) -> None:
    before = world.position()
    decided = world.tokens.decide(cc(acme))
    assert world.position() == before
    assert world.app.find(decided.aggregates[0].id, Token) is None
    issued = world.tokens.handle(cc(acme))
    assert world.position() == before + 1
    assert world.app.find(issued.aggregates[0].id, Token) is not None


def test_client_access_token_ttl_is_clamped(world: World, acme: SignedUp) -> None:
    new = world.accounts.new_client(CreateClient(project_id=acme.project.id, name="short", actor="user:x",
                                                 access_token_ttl=1))
    world.app.save(new.client)
    request = TokenRequest(grant_type="client_credentials", client_id=new.client.client_id,
                           client_secret=new.client_secret)
    assert world.tokens.handle(request).expires_in == 5


def test_wrong_secret_is_invalid_client_and_saves_only_its_refusal(world: World, acme: SignedUp) -> None:
    before = world.position()
    wrong = world.minter.client_secret()
    with pytest.raises(InvalidClient) as refused:
        world.tokens.handle(cc(acme, client_secret=wrong))
    assert refused.value.status_code == 401
    assert world.position() == before + 1
    (recorded,) = world.app.recorder.select_notifications(start=before + 1, limit=1)
    assert recorded.topic.endswith("Refusal.TokenRequestRefused")
    assert wrong.encode() not in bytes(recorded.state)


@pytest.mark.parametrize("secret", [None, "", "secret", "klcs_short", "klrt_" + "A" * 38])
def test_missing_or_malformed_secret_is_invalid_client(secret: str | None, world: World, acme: SignedUp) -> None:
    with pytest.raises(InvalidClient):
        world.tokens.handle(cc(acme, client_secret=secret))


def test_a_malformed_secret_is_refused_without_reading_the_store(world: World, acme: SignedUp,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    reads = ReadCounter(world, monkeypatch)
    real, nobody = acme.client.client_secret, world.minter.client_id()  # a client id's shape, registered by no one
    mistyped = real[:-1] + ("A" if real[-1] != "A" else "B")
    for request in (cc(acme, client_secret=mistyped), cc(acme, client_id=nobody, client_secret=mistyped)):
        with pytest.raises(InvalidClient) as malformed:
            world.tokens.decide(request)
    # The decision reads nothing; recording each refusal looks its client's project up once (bounded by the limits).
    assert reads.calls == 2
    # The control: a well-formed secret of an unknown client is refused the same way, after a look-up.
    with pytest.raises(InvalidClient) as unknown:
        world.tokens.decide(cc(acme, client_id=nobody, client_secret=world.minter.client_secret()))
    assert reads.calls > 0
    assert unknown.value.description == malformed.value.description


@pytest.mark.parametrize("client_id", [None, ""])
def test_no_client_id_is_invalid_client(client_id: str | None, world: World, acme: SignedUp) -> None:
    with pytest.raises(InvalidClient):
        world.tokens.decide(cc(acme, client_id=client_id))


@pytest.mark.parametrize("grant_type", ["password", "client_credentials"])
def test_the_dashboard_sending_a_secret_is_invalid_client(grant_type: str, world: World, acme: SignedUp) -> None:
    request = TokenRequest(grant_type=grant_type, client_id="dashboard", client_secret=acme.client.client_secret,
                           username="owner@acme.test", password=PASSWORD)
    with pytest.raises(InvalidClient):
        world.tokens.decide(request)


def test_the_dashboard_may_not_use_client_credentials(world: World) -> None:
    with pytest.raises(UnauthorizedClient):
        world.tokens.decide(TokenRequest(grant_type="client_credentials", client_id="dashboard"))


def test_a_project_client_may_not_use_password(world: World, acme: SignedUp) -> None:
    with pytest.raises(UnauthorizedClient):
        world.tokens.decide(cc(acme, grant_type="password", username="owner@acme.test", password=PASSWORD))


@pytest.mark.parametrize("grant_type", ["authorization_code", "implicit", "", "CLIENT_CREDENTIALS",
                                        "urn:ietf:params:oauth:grant-type:jwt-bearer"])
def test_unknown_grant_type_is_unsupported(grant_type: str, world: World, acme: SignedUp) -> None:
    with pytest.raises(UnsupportedGrantType):
        world.tokens.decide(cc(acme, grant_type=grant_type))


@pytest.mark.parametrize("scope", ["audit:read", "project:read members:write", "tokens:revoke"])
def test_scope_beyond_the_clients_is_invalid_scope(scope: str, world: World, acme: SignedUp) -> None:
    with pytest.raises(InvalidScope):
        world.tokens.decide(cc(acme, scope=scope))


@pytest.mark.parametrize("scope", ["root", "project:read admin", "PROJECT:READ", "project:*", "\t",
                                   "project:read\ttokens:read", "project:read\ntokens:read"])
def test_unknown_scope_is_invalid_scope(scope: str, world: World, acme: SignedUp) -> None:
    with pytest.raises(InvalidScope, match="unknown"):
        world.tokens.decide(cc(acme, scope=scope))


@pytest.mark.parametrize("scope", ["", " ", "   "])
def test_an_empty_scope_is_invalid_scope(scope: str, world: World, acme: SignedUp) -> None:
    with pytest.raises(InvalidScope, match="empty"):
        world.tokens.decide(cc(acme, scope=scope))


def test_a_requested_subset_is_honoured(world: World, acme: SignedUp) -> None:
    issued = world.tokens.handle(cc(acme, scope="tokens:read project:read tokens:read"))
    assert issued.scope == "project:read tokens:read"
    assert world.validator.validate(issued.access_token)["scope"] == "project:read tokens:read"
    assert issued.aggregates[0].scope == "project:read tokens:read"


def test_an_expired_secret_is_refused(world: World, acme: SignedUp) -> None:
    ttl = world.settings.lifetimes.client_secret_ttl
    world.clock.advance(seconds=ttl - 1)
    assert world.tokens.decide(cc(acme)).expires_in == 3600
    world.clock.advance(seconds=1)
    with pytest.raises(InvalidClient):
        world.tokens.decide(cc(acme))


def test_a_rotated_secret_works_during_the_grace_only(world: World, acme: SignedUp) -> None:
    client = world.app.load(acme.client.client.id, Client)
    new_secret = world.minter.client_secret()
    client.rotate_secret(secret_hash=world.secrets.hash(new_secret), secret_hint=world.minter.hint(new_secret),
                         secret_expires_at=T0 + timedelta(days=30), previous_secret_expires_at=T0 + timedelta(hours=1),
                         actor="user:x")
    world.app.save(client)
    assert world.tokens.decide(cc(acme)).scope
    assert world.tokens.decide(cc(acme, client_secret=new_secret)).scope
    world.clock.advance(hours=1)
    with pytest.raises(InvalidClient):
        world.tokens.decide(cc(acme))
    assert world.tokens.decide(cc(acme, client_secret=new_secret)).scope


def test_a_revoked_client_is_refused_at_once(world: World, acme: SignedUp) -> None:
    world.tokens.handle(cc(acme))  # warms the cache with the live client
    client = world.app.load(acme.client.client.id, Client)
    client.revoke(actor="user:x")
    world.app.save(client)
    with pytest.raises(InvalidClient):
        world.tokens.decide(cc(acme))

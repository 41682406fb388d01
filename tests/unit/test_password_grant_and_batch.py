"""The password grant (dashboard logins) and decide_batch, on the in-memory store."""

from dataclasses import replace
from datetime import timedelta
from uuid import UUID

import jwt
import pytest

from application.oauth.errors import InvalidClient, InvalidGrant, InvalidRequest, InvalidScope, UnsupportedGrantType
from application.oauth.grants import TokenRequest
from application.oauth.tokens import IssuedTokens
from domain.ids import refresh_token_aggregate_id
from domain.scopes import ALL_SCOPES
from domain.token import Token, TokenKind
from domain.user import User
from tests.unit.conftest import PASSWORD, T0, World

EMAIL = "ada@example.test"


def login(username: str = EMAIL, password: str | None = PASSWORD, **extra: str) -> TokenRequest:
    return TokenRequest(grant_type="password", client_id="dashboard", username=username, password=password, **extra)


def test_password_grant_issues_access_and_refresh_of_one_family(world: World) -> None:
    user_id = world.sign_up(EMAIL).user.id
    before = world.position()
    issued = world.tokens.handle(login())
    assert world.position() == before + 2
    assert issued.refresh_token is not None
    assert issued.refresh_token.startswith("klrt_")
    assert world.minter.is_refresh_token(issued.refresh_token)
    assert issued.expires_in == world.settings.lifetimes.dashboard_access_token_ttl == 900
    assert issued.response()["refresh_token"] == issued.refresh_token
    access, refresh = sorted(issued.aggregates, key=lambda t: t.kind)
    assert (access.kind, refresh.kind) == (TokenKind.ACCESS, TokenKind.REFRESH)
    assert refresh.id == refresh_token_aggregate_id(world.secrets.hash(issued.refresh_token))
    assert access.family_id == refresh.family_id == refresh.id
    assert access.user_id == refresh.user_id == user_id
    assert access.project_id is None and refresh.project_id is None
    assert refresh.expires_at == T0 + timedelta(days=30)
    claims = world.validator.validate(issued.access_token)
    assert claims["sub"] == str(user_id)
    assert claims["client_id"] == "dashboard"
    assert "project_id" not in claims
    assert claims["scope"] == " ".join(sorted(ALL_SCOPES))
    assert UUID(claims["jti"]) == access.id
    assert world.app.load(refresh.id, Token).kind is TokenKind.REFRESH


def test_no_access_token_outlives_its_login(world: World) -> None:
    """The family's absolute lifetime bounds its access tokens as it bounds its refresh tokens: near the login's
    end, an access token (whole seconds) is cut to end with it, and with less than a second left the refresh is
    refused."""
    world.sign_up(EMAIL)
    short = replace(world.tokens, lifetimes=replace(world.tokens.lifetimes, refresh_family_ttl=600))  # < 900
    world.clock.advance(seconds=0.7)  # the login's family ends at T0 + 600.7 s
    end = T0 + timedelta(seconds=600.7)
    last_second = T0 + timedelta(seconds=600)

    def access_of(issued: IssuedTokens) -> Token:
        return next(t for t in issued.aggregates if t.kind == TokenKind.ACCESS)

    issued = short.handle(login())
    assert issued.expires_in == 600 and access_of(issued).expires_at == last_second
    world.clock.advance(seconds=590.5)
    refreshed = short.handle(TokenRequest(grant_type="refresh_token", client_id="dashboard",
                                          refresh_token=issued.refresh_token))
    assert refreshed.expires_in == 9 and access_of(refreshed).expires_at == last_second
    claims = jwt.decode(refreshed.access_token, options={"verify_signature": False})
    assert claims["exp"] == int(last_second.timestamp())
    world.clock.current = end - timedelta(seconds=0.2)  # the refresh token is live; 0.2 s cannot make a token
    with pytest.raises(InvalidGrant) as refused:
        short.handle(TokenRequest(grant_type="refresh_token", client_id="dashboard",
                                  refresh_token=refreshed.refresh_token))
    assert refused.value.reason == "refresh_token_expired"


def test_username_is_matched_case_insensitively(world: World) -> None:
    user_id = world.sign_up(EMAIL).user.id
    issued = world.tokens.decide(login(username="  ADA@Example.TEST "))
    assert issued.aggregates[0].user_id == user_id


def test_two_logins_are_two_families(world: World) -> None:
    world.sign_up(EMAIL)
    first, second = world.tokens.handle(login()), world.tokens.handle(login())
    assert first.refresh_token != second.refresh_token
    assert {t.family_id for t in first.aggregates}.isdisjoint({t.family_id for t in second.aggregates})


def test_password_grant_honours_a_requested_subset(world: World) -> None:
    world.sign_up(EMAIL)
    issued = world.tokens.decide(login(scope="audit:read project:read"))
    assert issued.scope == "audit:read project:read"
    assert {t.scope for t in issued.aggregates} == {"audit:read project:read"}
    with pytest.raises(InvalidScope):
        world.tokens.decide(login(scope="project:read superuser"))


def test_wrong_password_and_unknown_user_are_the_same_invalid_grant(world: World) -> None:
    world.sign_up(EMAIL)
    before = world.position()
    with pytest.raises(InvalidGrant) as wrong_password:
        world.tokens.handle(login(password=PASSWORD + "!"))
    with pytest.raises(InvalidGrant) as unknown_user:
        world.tokens.handle(login(username="nobody@example.test"))
    assert wrong_password.value.description == unknown_user.value.description
    # Only the audit tells them apart: each refusal is recorded, with its reason.
    assert (wrong_password.value.reason, unknown_user.value.reason) == ("password_wrong", "user_unknown")
    assert world.position() == before + 2


def test_a_disabled_user_is_refused(world: World) -> None:
    user_id = world.sign_up(EMAIL).user.id
    world.tokens.decide(login())  # warms the cache with the enabled user
    user = world.app.load(user_id, User)
    user.disable(actor="system")
    world.app.save(user)
    with pytest.raises(InvalidGrant):
        world.tokens.decide(login())


@pytest.mark.parametrize(("username", "password"), [(None, PASSWORD), ("", PASSWORD), (EMAIL, None)])
def test_missing_username_or_password_is_invalid_request(username: str | None, password: str | None,
                                                         world: World) -> None:
    world.sign_up(EMAIL)
    with pytest.raises(InvalidRequest):
        world.tokens.decide(TokenRequest(grant_type="password", client_id="dashboard", username=username,
                                         password=password))


def test_an_empty_password_is_a_wrong_password(world: World) -> None:
    world.sign_up(EMAIL)
    with pytest.raises(InvalidGrant):
        world.tokens.decide(login(password=""))


def test_decide_batch_gives_each_request_its_own_outcome(world: World) -> None:
    acme = world.sign_up(EMAIL)
    other = world.sign_up("other@example.test")
    good = TokenRequest(grant_type="client_credentials", client_id=acme.client.client.client_id,
                        client_secret=acme.client.client_secret)
    requests = [
        good,
        TokenRequest(grant_type="client_credentials", client_id=acme.client.client.client_id,
                     client_secret=other.client.client_secret),  # another client's secret
        TokenRequest(grant_type="client_credentials", client_id=other.client.client.client_id,
                     client_secret=other.client.client_secret, scope="tokens:read"),
        TokenRequest(grant_type="client_credentials", client_id="klc_missing",
                     client_secret=world.minter.client_secret()),
        TokenRequest(grant_type="authorization_code", client_id=acme.client.client.client_id,
                     client_secret=acme.client.client_secret),
        TokenRequest(grant_type="client_credentials", client_id=acme.client.client.client_id,
                     client_secret="malformed"),
        login(),
        good,
    ]
    before = world.position()
    outcomes = world.tokens.decide_batch(requests)
    assert world.position() == before  # deciding writes nothing, refused requests never will
    kinds = [type(o).__name__ for o in outcomes]
    assert kinds == ["IssuedTokens", "InvalidClient", "IssuedTokens", "InvalidClient", "UnsupportedGrantType",
                     "InvalidClient", "IssuedTokens", "IssuedTokens"]
    assert isinstance(outcomes[1], InvalidClient) and isinstance(outcomes[4], UnsupportedGrantType)
    issued = [o for o in outcomes if isinstance(o, IssuedTokens)]
    claims = [world.validator.validate(o.access_token) for o in issued]
    assert [c["client_id"] for c in claims] == [acme.client.client.client_id, other.client.client.client_id,
                                                "dashboard", acme.client.client.client_id]
    assert claims[1]["project_id"] == str(other.project.id) and claims[1]["scope"] == "tokens:read"
    assert claims[0]["jti"] != claims[3]["jti"]
    aggregates = [a for o in issued for a in o.aggregates]
    assert len(aggregates) == 5
    world.app.save(*aggregates)
    assert world.position() == before + 5
    assert all(world.app.find(a.id, Token) is not None for a in aggregates)


def test_decide_batch_matches_decide_one_by_one(world: World) -> None:
    acme = world.sign_up(EMAIL)
    requests = [TokenRequest(grant_type="client_credentials", client_id=acme.client.client.client_id,
                             client_secret=acme.client.client_secret, scope=scope)
                for scope in ("project:read", "audit:read", "", "tokens:read clients:read")]
    batch = world.tokens.decide_batch(requests)
    single: list[object] = []
    for request in requests:
        try:
            single.append(world.tokens.decide(request).scope)
        except InvalidScope as error:
            single.append(type(error))
    assert [o.scope if isinstance(o, IssuedTokens) else type(o) for o in batch] == single
    assert world.tokens.decide_batch([]) == []


def test_a_narrower_scope_on_refresh_is_for_that_access_token_only(world: World) -> None:
    """RFC 6749 section 6: the scope asked for on refresh may include anything originally granted, and an omitted
    scope means the original one: a narrowing is not carried into the rotated refresh token."""
    world.sign_up(EMAIL)
    original = "audit:read clients:read project:read"
    issued = world.tokens.handle(login(scope=original))

    def refresh(refresh_token: str | None, scope: str | None = None) -> IssuedTokens:
        extra = {"scope": scope} if scope is not None else {}
        return world.tokens.handle(TokenRequest(grant_type="refresh_token", client_id="dashboard",
                                                refresh_token=refresh_token, **extra))

    narrowed = refresh(issued.refresh_token, "project:read")
    assert narrowed.scope == "project:read"
    assert world.validator.validate(narrowed.access_token)["scope"] == "project:read"
    rotated = next(t for t in narrowed.aggregates if t.kind == TokenKind.REFRESH and not t.used)
    assert rotated.scope == original
    omitted = refresh(narrowed.refresh_token)
    assert omitted.scope == original
    asked_again = refresh(omitted.refresh_token, "audit:read clients:read")
    assert asked_again.scope == "audit:read clients:read"
    with pytest.raises(InvalidScope):  # never more than the original grant
        refresh(asked_again.refresh_token, "audit:read members:write")

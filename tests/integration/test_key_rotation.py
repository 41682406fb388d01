"""Signing-key rotation on real PostgreSQL across two processes' containers, seen by a resource server that caches
the JWKS for an hour."""

import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any
from uuid import UUID

import anyio
import jwt
import pytest

from application.accounts import SignedUp
from application.oauth.errors import TemporarilyUnavailable
from application.oauth.grants import TokenRequest
from domain.ids import DASHBOARD_CLIENT_ID, refresh_token_aggregate_id
from infrastructure.bootstrap import Container, Endpoints, build
from infrastructure.http.oauth import threaded_grant
from infrastructure.settings import Settings
from tests.conftest import fresh_database
from tests.integration.support import PASSWORD, head, notifications, sign_up
from workers.keys import key_rotation

pytestmark = pytest.mark.integration

TOKEN_ISSUED = "domain.token:Token.TokenIssued"


class MovableClock:
    """The real time plus an offset the test moves (rotation decisions only; JWT expiry stays real time)."""

    def __init__(self, clock: Any) -> None:
        self.clock, self.offset = clock, timedelta()

    def now(self) -> Any:
        return self.clock.now() + self.offset

    def advance(self, **delta: float) -> None:
        self.offset += timedelta(**delta)


class CachingResourceServer:
    """Fetches the JWKS once and validates with that copy until its hour is over (the test's clock decides)."""

    def __init__(self, fetch: Any, clock: MovableClock, settings: Settings) -> None:
        self.fetch, self.clock, self.settings = fetch, clock, settings
        self.fetched_at: Any = None
        self.keys: dict[str, Any] = {}

    def jwks(self) -> dict[str, Any]:
        if self.fetched_at is None or self.clock.now() - self.fetched_at >= timedelta(hours=1):
            self.keys = {k["kid"]: jwt.PyJWK(k) for k in self.fetch()["keys"]}
            self.fetched_at = self.clock.now()
        return self.keys

    def validate(self, token: str) -> dict[str, Any]:
        kid = jwt.get_unverified_header(token)["kid"]
        key = self.jwks()[kid]  # a KeyError is a token the resource server cannot verify
        return jwt.decode(token, key.key, algorithms=[key.algorithm_name], audience=self.settings.audience,
                          issuer=self.settings.issuer)


@pytest.fixture
def pair(server_url: str, redis_url: str, settings: Settings) -> Iterator[tuple[Container, Container]]:
    """Two processes' containers (the one that rotates, the API that signs and validates) on a fresh database."""
    with fresh_database(server_url) as url:
        endpoints = Endpoints(database_url=url, redis_url=redis_url)
        first = build(settings, endpoints, migrate=True)
        second = build(settings, endpoints)
        try:
            yield first, second
        finally:
            second.close()
            first.close()


def issue(container: Container, signed: Any) -> str:
    return container.tokens.handle(TokenRequest(grant_type="client_credentials",
                                                client_id=signed.client.client.client_id,
                                                client_secret=signed.client.client_secret)).access_token


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def issue_signed_by(container: Container, signed: Any, kid: str, timeout: float = 10.0) -> str:
    """Issues tokens until one is signed by ``kid`` (the signer re-checks the ring about every second)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        token = issue(container, signed)
        if kid_of(token) == kid:
            return token
        time.sleep(0.1)
    raise AssertionError(f"no token signed by {kid} in time")


def test_a_jwks_cached_for_an_hour_keeps_validating_through_a_scheduled_rotation(
        pair: tuple[Container, Container], settings: Settings) -> None:
    rotator_process, api = pair
    clock = MovableClock(api.tokens.clock)
    rotation = key_rotation(rotator_process, clock)
    server = CachingResourceServer(api.keys.jwks, clock, settings)
    signed = sign_up(api)
    old_kid = api.keys.snapshot.active_kid
    before = issue(api, signed)
    assert server.validate(before)["client_id"] == signed.client.client.client_id

    clock.advance(seconds=settings.signing_key_rotation - settings.signing_key_prepublish)
    created = rotation.run_schedule()
    assert [s.action for s in created] == ["created"]
    new_kid = created[0].kid
    assert kid_of(issue(api, signed)) == old_kid  # published, not yet signing
    # The resource server refreshes its cache some time in the day before the activation (here 50 minutes before
    # it) and does not fetch again for an hour.
    clock.advance(seconds=settings.signing_key_prepublish - 3000)
    assert server.validate(issue(api, signed))["sub"]
    assert new_kid in server.keys

    clock.advance(seconds=3000 - 60)
    assert rotation.run_schedule() == []
    clock.advance(seconds=60)
    assert [(s.action, s.kid) for s in rotation.run_schedule()] == [("activated", new_kid)]
    after = issue_signed_by(api, signed, new_kid)
    fetched_at = server.fetched_at
    assert server.validate(after)["client_id"] == signed.client.client.client_id  # known before it signed
    assert server.validate(before)["client_id"] == signed.client.client.client_id  # the old key still verifies
    assert server.fetched_at == fetched_at  # no re-fetch was needed
    assert api.validator.validate(before) and api.validator.validate(after)

    clock.advance(days=2)
    assert [(s.action, s.kid) for s in rotation.run_schedule()] == [("retired", old_kid)]
    assert old_kid not in {k["kid"] for k in api.keys.jwks()["keys"]}


def test_an_emergency_rotation_is_refused_at_once_by_another_process(pair: tuple[Container, Container]) -> None:
    rotator_process, api = pair
    signed = sign_up(api)
    old = issue(api, signed)
    old_kid = kid_of(old)
    found = api.revocation.finder.find(old)
    assert found is not None and api.introspection.handle(signed.client.client, old)["active"] is True
    steps = key_rotation(rotator_process).rotate(emergency=True, actor="operator")
    assert [s.action for s in steps] == ["created", "activated", "revoked"]
    # No wait: the API process checks the ring's version on every validation.
    with pytest.raises(Exception, match="unknown key"):
        api.validator.validate(old)
    assert api.introspection.handle(signed.client.client, old) == {"active": False}
    assert old_kid not in {k["kid"] for k in api.keys.jwks()["keys"]}
    fresh = issue_signed_by(api, signed, steps[0].kid)
    assert api.validator.validate(fresh)["client_id"] == signed.client.client.client_id


@pytest.fixture
def stale_signer(pair: tuple[Container, Container],
                 monkeypatch: pytest.MonkeyPatch) -> tuple[Container, Container, SignedUp, str]:
    """The pair after the API process signed with its key, which another process then revoked (an emergency
    rotation) within the second before the API's signer looks at the ring again. Returns the new kid last."""
    rotator_process, api = pair
    monkeypatch.setattr(api.keys, "_sign_check_interval", 3600.0)  # "within the second", without a race
    signed = sign_up(api)
    old_kid = kid_of(issue(api, signed))
    new_kid = key_rotation(rotator_process).rotate(emergency=True, actor="operator")[0].kid
    assert api.keys.for_signing().active_kid == old_kid  # the signer still holds the revoked key
    return rotator_process, api, signed, new_kid


def issued_ids(container: Container, after: int) -> list[UUID]:
    return [n.originator_id for n in notifications(container, after=after) if n.topic == TOKEN_ISSUED]


def jti_of(token: str) -> UUID:
    return UUID(jwt.decode(token, options={"verify_signature": False})["jti"])


def test_a_client_credentials_token_signed_with_a_key_revoked_meanwhile_is_signed_again_before_it_is_answered(
        stale_signer: tuple[Container, Container, SignedUp, str]) -> None:
    """The group commit's save is refused on the key ring's moved version; decided again, the token is signed with
    the new key. Without the guard the answer was a token every validator refuses from the start."""
    _, api, signed, new_kid = stale_signer
    before = head(api)
    client = signed.client
    token = api.committer.submit_request(TokenRequest(
        grant_type="client_credentials", client_id=client.client.client_id,
        client_secret=client.client_secret)).result(timeout=10).access_token
    assert kid_of(token) == new_kid
    assert api.validator.validate(token)["client_id"] == client.client.client_id
    assert issued_ids(api, before) == [jti_of(token)]  # the stale token was never recorded


def test_a_login_signed_with_a_key_revoked_meanwhile_is_decided_again_on_both_token_paths(
        stale_signer: tuple[Container, Container, SignedUp, str]) -> None:
    """The threaded grants: the HTTP handler's (decided in a thread, saved with the group commit) and
    ``TokenEndpoint.handle``'s (saved directly). Each answer's access token verifies, and only what was answered
    was recorded."""
    rotator_process, api, signed, new_kid = stale_signer
    login = TokenRequest(grant_type="password", client_id=DASHBOARD_CLIENT_ID, username=signed.user.email,
                         password=PASSWORD)
    before = head(api)
    first = anyio.run(threaded_grant, api, login)
    assert kid_of(first.access_token) == new_kid
    assert api.validator.validate(first.access_token)["sub"] == str(signed.user.id)
    assert len(issued_ids(api, before)) == 2  # the access and refresh token answered, nothing of the stale try

    newest = key_rotation(rotator_process).rotate(emergency=True, actor="operator")[0].kid  # and once more
    assert api.keys.for_signing().active_kid == new_kid
    before = head(api)
    second = api.tokens.handle(replace(login, grant_type="refresh_token", username=None, password=None,
                                       refresh_token=first.refresh_token))
    assert kid_of(second.access_token) == newest
    assert api.validator.validate(second.access_token)["sub"] == str(signed.user.id)
    assert issued_ids(api, before) == [refresh_id(api, second.refresh_token), jti_of(second.access_token)]


def refresh_id(container: Container, value: str | None) -> UUID:
    assert value is not None
    return refresh_token_aggregate_id(container.tokens.secrets.hash(value))


def test_a_refresh_that_lost_its_race_is_not_decided_again_when_the_ring_also_moved(
        stale_signer: tuple[Container, Container, SignedUp, str]) -> None:
    """The loser of two rotations of one refresh token conflicts on the token's stream; that the ring moved too
    must not get it decided again, where it could be taken for a replay. A rotation that lost no race is."""
    _, api, signed, _ = stale_signer
    login = api.tokens.handle(TokenRequest(grant_type="password", client_id=DASHBOARD_CLIENT_ID,
                                           username=signed.user.email, password=PASSWORD))
    refresh = TokenRequest(grant_type="refresh_token", client_id=DASHBOARD_CLIENT_ID,
                           refresh_token=login.refresh_token)
    loser = api.tokens.decide(refresh)
    winner = api.tokens.handle(refresh)  # another request rotates the token first
    key_rotation(api).rotate(emergency=True, actor="operator")  # and the ring moves
    assert not api.tokens.signed_on_stale_keys(loser)
    unraced = api.tokens.decide(replace(refresh, refresh_token=winner.refresh_token))
    key_rotation(api).rotate(emergency=True, actor="operator")
    assert api.tokens.signed_on_stale_keys(unraced)


def test_a_ring_that_moves_before_every_save_is_answered_503_and_issues_nothing(
        pair: tuple[Container, Container]) -> None:
    rotator_process, api = pair
    signed = sign_up(api)
    rotation = key_rotation(rotator_process)

    def save_after_a_rotation(*aggregates: Any, guards: Any = ()) -> int:
        rotation.rotate(emergency=True, actor="operator")
        return api.tokens.save(*aggregates, guards=guards)

    moving = replace(api.tokens, save=save_after_a_rotation)
    before = head(api)
    with pytest.raises(TemporarilyUnavailable, match="signing keys changed"):
        moving.handle(TokenRequest(grant_type="client_credentials", client_id=signed.client.client.client_id,
                                   client_secret=signed.client.client_secret))
    assert issued_ids(api, before) == []


def test_a_login_whose_ring_moves_before_every_save_is_answered_503_by_the_token_endpoint(
        pair: tuple[Container, Container], monkeypatch: pytest.MonkeyPatch) -> None:
    """``threaded_grant``, the HTTP path of logins and refreshes: decided again once, then 503, nothing issued."""
    rotator_process, api = pair
    signed = sign_up(api)
    rotation = key_rotation(rotator_process)
    saves: list[int] = []
    save = api.committer.saved

    async def save_after_a_rotation(*aggregates: Any, guards: Any = ()) -> int:
        rotation.rotate(emergency=True, actor="operator")
        saves.append(len(aggregates))
        return await save(*aggregates, guards=guards)

    monkeypatch.setattr(api.committer, "saved", save_after_a_rotation)
    before = head(api)
    with pytest.raises(TemporarilyUnavailable, match="signing keys changed"):
        anyio.run(threaded_grant, api, TokenRequest(grant_type="password", client_id=DASHBOARD_CLIENT_ID,
                                                    username=signed.user.email, password=PASSWORD))
    assert saves == [2, 2]
    assert issued_ids(api, before) == []

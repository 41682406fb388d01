"""RFC 7009 revocation on the event loop (``infrastructure.http.fast_revocation``) against the real store, Redis and
group committer: a known client's own client_credentials token, or a dashboard access token presented by its holder,
is revoked in the batch's transaction, exactly as the general path records it, and everything else is handed back to
the general path untouched."""

import asyncio
import json
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from application.accounts import SignedUp
from application.clients import RotateSecret
from application.oauth.errors import InvalidGrant
from application.oauth.grants import IssuedTokens, TokenRequest
from application.oauth.revocation import RevocationRequest
from domain.client import DASHBOARD
from domain.ids import DASHBOARD_CLIENT_ID
from domain.scopes import ALL_SCOPES
from domain.token import Token
from infrastructure.bootstrap import Container, Endpoints, build
from infrastructure.http.fast_revocation import revoke_known
from infrastructure.settings import Settings
from tests.conftest import fresh_database
from tests.integration.fast_support import Harness, client_token
from tests.integration.support import PASSWORD, sign_up
from workers.keys import key_rotation

SOURCE = "198.51.100.8"


def revoke(harness: Harness, account: object, token: str, secret: str | None = None) -> bool:
    client = account.client  # type: ignore[attr-defined]
    credentials = (client.client.client_id, secret or client.client_secret)
    return harness.loop.run_until_complete(revoke_known(harness.fast, harness.container, credentials, token, SOURCE))


def stream(container: Container, token: str) -> list[object]:
    token_id = UUID(jwt.decode(token, options={"verify_signature": False})["jti"])
    return list(container.app.events.get(token_id))


def known(harness: Harness, container: Container, account: object) -> None:
    """The general path authenticates the client once and teaches the fast path its secret."""
    harness.general(account, client_token(container, account))


def test_a_known_client_revokes_its_own_token_in_the_batch(harness: Harness, container: Container) -> None:
    account = sign_up(container)
    known(harness, container, account)
    token = client_token(container, account)
    assert revoke(harness, account, token) is True
    _, revoked = stream(container, token)
    assert isinstance(revoked, Token.TokenRevoked) and revoked.originator_version == 2
    client_id = account.client.client.client_id
    assert (revoked.reason, revoked.actor, revoked.client_id) == ("revoked by client", f"client:{client_id}",
                                                                  client_id)
    assert revoked.project_id == account.project.id and revoked.revocation_id is not None
    # Refused everywhere the instant it was answered: the store listed it in the same transaction.
    assert container.lookup.is_revoked(revoked.originator_id)
    assert harness.answer(account, token) == {"active": False}
    # The aggregate replays: the event is exactly what ``Token.revoke`` records.
    replayed = container.app.load(revoked.originator_id, Token)
    assert replayed.revoked and replayed.version == 2


def test_revoking_again_and_racing_revocations_record_one_event(harness: Harness, container: Container) -> None:
    account = sign_up(container)
    known(harness, container, account)
    token = client_token(container, account)

    async def race() -> None:
        credentials = (account.client.client.client_id, account.client.client_secret)
        await asyncio.gather(*(revoke_known(harness.fast, container, credentials, token, SOURCE) for _ in range(8)))

    harness.loop.run_until_complete(race())  # twins in a batch and conflicts go to the general path
    assert len(stream(container, token)) == 2
    assert revoke(harness, account, token) is True  # decided on the stream: already revoked, nothing to record
    container.revocation.handle(account.client.client, RevocationRequest(token=token, token_type_hint=None))
    assert len(stream(container, token)) == 2


def test_anything_not_known_to_be_in_order_goes_to_the_general_path(harness: Harness, container: Container) -> None:
    account, other = sign_up(container), sign_up(container, project="B")
    token, foreign = client_token(container, account), client_token(container, other)
    assert revoke(harness, account, token) is False  # a secret this process never verified
    known(harness, container, account)
    assert revoke(harness, account, foreign) is False  # another project's client's token
    assert revoke(harness, account, "not-a-token") is False
    forged = ".".join(("eyJhbGciOiJub25lIn0", jwt.utils.base64url_encode(json.dumps(
        {"client_id": account.client.client.client_id, "jti": str(stream(container, foreign)[0].originator_id)}
    ).encode()).decode(), ""))
    assert revoke(harness, account, forged) is False  # names another client's token: its stream says no
    assert revoke(harness, account, token, secret=account.client.client_secret[:-4] + "AAAA") is False
    container.clients.rotate(RotateSecret(project_id=account.project.id, client_id=account.client.client.client_id,
                                          grace_period=0, actor=f"user:{account.user.id}",
                                          caller_permissions=ALL_SCOPES))
    assert revoke(harness, account, token) is False  # the client's stream moved on: the copy is stale
    assert len(stream(container, token)) == len(stream(container, foreign)) == 1


def login(container: Container, account: SignedUp) -> IssuedTokens:
    return container.tokens.handle(TokenRequest(grant_type="password", client_id=DASHBOARD_CLIENT_ID,
                                                username=account.user.email, password=PASSWORD))


def dashboard_revoke(harness: Harness, token: str, credentials: tuple[str, str | None] = (DASHBOARD_CLIENT_ID, None),
                     ) -> bool:
    return harness.loop.run_until_complete(revoke_known(harness.fast, harness.container, credentials, token, SOURCE))


def test_the_dashboard_revokes_a_presented_access_token_in_the_batch(harness: Harness, container: Container) -> None:
    account = sign_up(container)
    tokens = login(container, account)
    assert dashboard_revoke(harness, tokens.access_token) is True
    issued, revoked = stream(container, tokens.access_token)
    assert isinstance(revoked, Token.TokenRevoked) and revoked.originator_version == 2
    assert (revoked.reason, revoked.actor, revoked.client_id, revoked.user_id, revoked.family_id) == (
        "revoked by client", "client:dashboard", DASHBOARD_CLIENT_ID, account.user.id, issued.family_id)
    assert revoked.project_id == issued.project_id and revoked.revocation_id is not None
    assert container.lookup.is_revoked(revoked.originator_id)  # listed in the batch's transaction
    assert container.app.load(revoked.originator_id, Token).revoked
    # RFC 7009 section 2.1: an access token is revoked alone; the login's refresh token still rotates.
    assert container.tokens.handle(TokenRequest(grant_type="refresh_token", client_id=DASHBOARD_CLIENT_ID,
                                                refresh_token=tokens.refresh_token)).refresh_token
    assert dashboard_revoke(harness, tokens.access_token) is True  # decided on the stream: nothing more to record
    assert len(stream(container, tokens.access_token)) == 2


def test_the_dashboard_path_revokes_nothing_a_token_of_its_own_does_not_prove(harness: Harness,
                                                                              container: Container) -> None:
    account = sign_up(container)
    victim = login(container, account).access_token
    header = jwt.get_unverified_header(victim)
    claims = jwt.decode(victim, options={"verify_signature": False})
    forged = jwt.encode(claims, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256", headers=header)
    unsigned = jwt.encode(claims, key=None, algorithm="none", headers={"typ": header["typ"], "kid": header["kid"]})
    assert dashboard_revoke(harness, forged) is False  # the victim's jti, kid and claims; another key's signature
    assert dashboard_revoke(harness, unsigned) is False
    assert dashboard_revoke(harness, victim, credentials=(DASHBOARD_CLIENT_ID, "a secret")) is False
    project_token = client_token(container, account)
    assert dashboard_revoke(harness, project_token) is False  # not the dashboard's: refused by the general path
    assert len(stream(container, victim)) == len(stream(container, project_token)) == 1


def test_a_string_whose_header_names_no_key_of_ours_is_not_queued(harness: Harness, container: Container,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The committer's thread also issues tokens: strings plainly not ours cost it no stream read."""
    victim = login(container, sign_up(container)).access_token
    header = jwt.get_unverified_header(victim)
    claims = jwt.decode(victim, options={"verify_signature": False})
    queued: list[Any] = []
    decided = container.committer.decided

    async def counting(request: Any) -> Any:
        queued.append(request)
        return await decided(request)

    monkeypatch.setattr(container.committer, "decided", counting)
    unknown_kid = jwt.encode(claims, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256",
                             headers={**header, "kid": "not-ours"})
    plain_jwt = jwt.encode(claims, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256",
                           headers={"kid": header["kid"]})  # typ JWT
    for token in (unknown_kid, plain_jwt):
        assert dashboard_revoke(harness, token) is False
    assert queued == []
    altered = victim[:-4] + ("AAAA" if not victim.endswith("AAAA") else "BBBB")  # our header, not the token issued
    assert dashboard_revoke(harness, altered) is False and len(queued) == 1  # the batch's hash check refused it
    assert len(stream(container, victim)) == 1


def test_the_dashboard_ends_a_login_in_the_batch(harness: Harness, container: Container) -> None:
    account = sign_up(container)
    first = login(container, account)
    rotated = container.tokens.handle(TokenRequest(grant_type="refresh_token", client_id=DASHBOARD_CLIENT_ID,
                                                   refresh_token=first.refresh_token))
    container.lookup.wait_for(container.revoker.head())  # the model holds the presented token's row
    assert dashboard_revoke(harness, rotated.refresh_token) is True
    # The live refresh token and both live access tokens, in one transaction that listed each of them.
    live_refresh, _, used = rotated.aggregates
    revoked = [live_refresh.id, *(UUID(jwt.decode(t, options={"verify_signature": False})["jti"])
                                  for t in (first.access_token, rotated.access_token))]
    events = [list(container.app.events.get(i))[-1] for i in revoked]
    assert all(isinstance(e, Token.TokenRevoked) and e.originator_version == 2 for e in events)
    assert {(e.reason, e.actor, e.family_id, e.revocation_id) for e in events} == {
        ("revoked by client", "client:dashboard", used.family_id, events[0].revocation_id)}
    assert all(container.lookup.is_revoked(i) for i in revoked)
    assert container.app.load(used.id, Token).used and not container.app.load(used.id, Token).revoked
    with pytest.raises(InvalidGrant):
        container.tokens.handle(TokenRequest(grant_type="refresh_token", client_id=DASHBOARD_CLIENT_ID,
                                             refresh_token=rotated.refresh_token))
    # Revoked now: the general path answers (RFC 7009 2.2: 200, nothing more to record).
    assert dashboard_revoke(harness, rotated.refresh_token) is False
    container.revocation.handle(DASHBOARD, RevocationRequest(token=rotated.refresh_token, token_type_hint=None))
    assert [len(list(container.app.events.get(i))) for i in revoked] == [2, 2, 2]


def test_a_refresh_token_not_plainly_a_dashboard_logout_goes_to_the_general_path(
        harness: Harness, container: Container) -> None:
    account = sign_up(container)
    tokens = login(container, account)
    assert dashboard_revoke(harness, container.tokens.minter.refresh_token()) is False  # well formed, unknown
    assert dashboard_revoke(harness, tokens.refresh_token, credentials=(DASHBOARD_CLIENT_ID, "a secret")) is False
    other = sign_up(container, project="B")
    assert dashboard_revoke(harness, tokens.refresh_token,
                            credentials=(other.client.client.client_id, other.client.client_secret)) is False
    assert len(list(container.app.events.get(tokens.aggregates[1].id))) == 1


def test_a_logout_and_a_revocation_of_its_access_token_in_one_batch_revoke_each_token_once(
        harness: Harness, container: Container) -> None:
    account = sign_up(container)
    tokens = login(container, account)
    container.lookup.wait_for(container.revoker.head())
    presented = (tokens.refresh_token, tokens.access_token)

    async def both() -> list[bool]:
        credentials = (DASHBOARD_CLIENT_ID, None)
        return list(await asyncio.gather(*(revoke_known(harness.fast, container, credentials, token, SOURCE)
                                           for token in presented)))

    for token, answered in zip(presented, harness.loop.run_until_complete(both()), strict=True):
        if not answered:  # handed on: the general path answers it
            container.revocation.handle(DASHBOARD, RevocationRequest(token=token, token_type_hint=None))
    for token_id in (t.id for t in tokens.aggregates):
        assert [type(e).__name__ for e in container.app.events.get(token_id)] == ["TokenIssued", "TokenRevoked"]


@pytest.fixture
def own_ring(server_url: str, redis_url: str, settings: Settings) -> Iterator[Harness]:
    """A harness on a database of its own: its key ring is rotated, which no other test may see."""
    with fresh_database(server_url) as url:
        built = build(settings, Endpoints(database_url=url, redis_url=redis_url), migrate=True)
        harness = Harness(built, url, redis_url)
        try:
            yield harness
        finally:
            harness.close()
            built.close()


def test_the_dashboard_path_takes_the_string_itself_as_proof_whatever_the_key_ring_did(own_ring: Harness) -> None:
    container = own_ring.container
    account = sign_up(container)
    first, second = login(container, account).access_token, login(container, account).access_token
    key_rotation(container).rotate(emergency=False, actor="operator")  # a successor pre-published: the ring moves
    assert dashboard_revoke(own_ring, first) is True  # no key snapshot involved: its keyed hash is the recorded one
    key_rotation(container).rotate(emergency=True, actor="operator")  # the key that signed both is revoked
    assert dashboard_revoke(own_ring, second) is True  # still the very token issued (refused everywhere anyway)
    assert [len(stream(container, token)) for token in (first, second)] == [2, 2]


def test_a_non_ascii_string_takes_the_general_path(harness: Harness, container: Container) -> None:
    tokens = login(container, sign_up(container))
    for token in (tokens.access_token + "\ud800", tokens.refresh_token + "\ud800", tokens.access_token + "\u00e9"):
        assert dashboard_revoke(harness, token) is False  # not one of ours; no UnicodeEncodeError (a 500)
    assert [len(list(container.app.events.get(t.id))) for t in tokens.aggregates] == [1, 1]

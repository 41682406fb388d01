"""RFC 7009 revocation on the event loop (``infrastructure.http.fast_revocation``) against the real store, Redis and
group committer: a known client's own client_credentials token is revoked in the batch's transaction, exactly as the
general path records it, and everything else is handed back to the general path untouched."""

import asyncio
import json
from uuid import UUID

import jwt

from application.clients import RotateSecret
from application.oauth.revocation import RevocationRequest
from domain.token import Token
from infrastructure.bootstrap import Container
from infrastructure.http.fast_revocation import revoke_known
from tests.integration.fast_support import Harness, client_token
from tests.integration.support import sign_up

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
                                          grace_period=0, actor=f"user:{account.user.id}"))
    assert revoke(harness, account, token) is False  # the client's stream moved on: the copy is stale
    assert len(stream(container, token)) == len(stream(container, foreign)) == 1

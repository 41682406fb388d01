"""A revocation too large for the group commit (a transaction of its own) is not starved by changes racing it, on
real PostgreSQL: a conflict decides again only the tokens whose streams moved (``Revoker._revoke_alone``).

Deciding a client's hundreds of thousands of tokens takes longer than the expiry sweep's period, and the sweep, or
the client itself, moves some of them during every such decision. The test makes that happen during every load of
more than one token, on a small scale: the limit is 2 tokens instead of 1,000.
"""

import uuid
from collections.abc import Sequence
from dataclasses import replace

import jwt
import pytest

from application.accounts import SignedUp
from application.oauth import revocation
from application.oauth.grants import TokenRequest
from application.token_admin import DeleteClient, RevokeTokens, TokenAdmin
from domain.client import Client
from domain.ids import client_aggregate_id
from domain.scopes import ALL_SCOPES
from domain.token import Token
from infrastructure.bootstrap import Container
from tests.integration.support import sign_up

pytestmark = pytest.mark.integration

TOKENS = 20  # more than the revoker's attempts (16): deciding everything again on each conflict never commits
ACTOR = "user:00000000-0000-0000-0000-000000000001"
REAL_LOAD = revocation.load_tokens


def issue(container: Container, signed: SignedUp) -> uuid.UUID:
    token = container.tokens.handle(TokenRequest(grant_type="client_credentials",
                                                 client_id=signed.client.client.client_id,
                                                 client_secret=signed.client.client_secret)).access_token
    return uuid.UUID(jwt.decode(token, options={"verify_signature": False})["jti"])


class Racer:
    """Revokes one of the loaded tokens, as its client would, whenever more than one token is loaded: the longer a
    decision's load, the likelier something moves meanwhile."""

    def __init__(self, container: Container, client_id: str) -> None:
        self.container, self.client_id = container, client_id
        self.raced: list[uuid.UUID] = []
        self.loads: list[int] = []

    def __call__(self, app: object, ids: Sequence[uuid.UUID], *, follow_children: bool,
                 generations: int | None = None) -> dict[uuid.UUID, Token]:
        loaded = REAL_LOAD(app, ids, follow_children=follow_children, generations=generations)
        self.loads.append(len(ids))
        victim = next((i for i in ids if i not in self.raced), None)
        if len(ids) > 1 and victim is not None:
            token = self.container.app.load(victim, Token)
            token.revoke(reason="revoked by client", actor=f"client:{self.client_id}")
            self.container.app.save(token)
            self.raced.append(victim)
        return loaded


@pytest.fixture
def racing(container: Container, monkeypatch: pytest.MonkeyPatch) -> tuple[SignedUp, list[uuid.UUID], Racer,
                                                                               TokenAdmin]:
    signed = sign_up(container)
    ids = [issue(container, signed) for _ in range(TOKENS)]
    racer = Racer(container, signed.client.client.client_id)
    monkeypatch.setattr(revocation, "load_tokens", racer)
    revoker = replace(container.revoker, group_commit_limit=2)
    return signed, ids, racer, TokenAdmin(app=container.app, revoker=revoker, index=container.lookup)


def test_a_large_bulk_revocation_decides_again_only_the_tokens_that_moved(
        container: Container, racing: tuple[SignedUp, list[uuid.UUID], Racer, TokenAdmin]) -> None:
    signed, ids, racer, admin = racing
    revoked = admin.revoke_tokens(RevokeTokens(project_id=signed.project.id, actor=ACTOR,
                                               client_id=signed.client.client.client_id))
    assert racer.loads == [TOKENS, 1]  # the whole selection once, then only the token that moved
    assert revoked == TOKENS - 1  # the racer revoked the other
    assert all(container.app.load(token_id, Token).revoked for token_id in ids)


def test_a_large_client_deletion_commits_though_a_token_moved_while_it_was_decided(
        container: Container, racing: tuple[SignedUp, list[uuid.UUID], Racer, TokenAdmin]) -> None:
    """The deletion's ``ClientRevoked`` is saved with the tokens: a deletion starved by its tokens' races would
    leave the client's secret working."""
    signed, ids, racer, admin = racing
    client_id = signed.client.client.client_id
    assert admin.delete_client(DeleteClient(project_id=signed.project.id, client_id=client_id,
                                            actor=ACTOR, caller_permissions=ALL_SCOPES)) == TOKENS - 1
    assert container.app.load(client_aggregate_id(client_id), Client).revoked
    assert all(container.app.load(token_id, Token).revoked for token_id in ids)
    assert len(racer.raced) == 1

"""RFC 7009 revocation of a client_credentials access token by its own client, decided in batches.

The common revocation (a project's API key revokes one of its own access tokens) is decided by the group committer
for a whole batch at once: one read of every batch token's stream and every batch client's version, each
token revoked on its own aggregate (``Token.revoke``: the event the general path records) and every event saved in
the batch's transaction. The presented string only names the stream (its ``jti``): whether the token was issued to
this client, and whether it is still live, is decided on the stream, never on the string's claims, so no signature
check is needed to trust anything. Whatever is not plainly such a revocation (a client changed since its copy was
taken, a token of another client or of a login's family, an unknown id, a twin in the batch) is left to the general
path (``application.oauth.revocation``), which verifies the token and answers as RFC 7009 says.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID, uuid4

from application.oauth.revocation import REVOKED_BY_CLIENT
from application.ports import Clock
from application.store import Keyledger
from domain.client import Client
from domain.ids import client_actor
from domain.token import Token, TokenKind


@dataclass(frozen=True, slots=True)
class ClientTokenRevocation:
    """A known client revoking the access token whose stream ``token_id`` names."""

    client: Client  # the private copy the presented secret verified against; its version must still be current
    token_id: UUID


@dataclass(frozen=True, slots=True)
class RevocationOutcome:
    """What the batch decided: ``decided`` False leaves the request to the general path."""

    decided: bool
    revoked: int = 0
    aggregates: tuple[Token, ...] = ()


UNDECIDED = RevocationOutcome(decided=False)


@dataclass(frozen=True, slots=True)
class ClientTokenRevoker:
    """Decides batches of ``ClientTokenRevocation`` on the tokens' streams (the group committer's hot path)."""

    app: Keyledger
    clock: Clock

    def decide_batch(self, requests: Sequence[ClientTokenRevocation]) -> list[RevocationOutcome]:
        """One outcome per request, from one read of the batch's token streams and its clients' versions."""
        # Fresh copies of the tokens, this batch's to change.
        tokens, versions = self.app.find_many_and_versions([r.token_id for r in requests], Token,
                                                           [r.client.id for r in requests])
        now = self.clock.now()
        taken: set[UUID] = set()
        outcomes = []
        for request in requests:
            token = tokens.get(request.token_id)
            if versions.get(request.client.id) != request.client.version or not _own(token, request.client) or (
                    request.token_id in taken):
                outcomes.append(UNDECIDED)
                continue
            assert token is not None
            taken.add(token.id)
            if not token.revocable(now):
                outcomes.append(RevocationOutcome(decided=True))  # revoked or expired already (RFC 7009 2.2)
                continue
            token.revoke(reason=REVOKED_BY_CLIENT, actor=client_actor(request.client.client_id),
                         revocation_id=uuid4())
            outcomes.append(RevocationOutcome(decided=True, revoked=1, aggregates=(token,)))
        return outcomes


def _own(token: Token | None, client: Client) -> bool:
    """Whether ``token`` is an access token the client got with client_credentials (no login family)."""
    return (token is not None and token.kind == TokenKind.ACCESS and token.client_id == client.client_id
            and token.project_id == client.project_id and token.family_id is None)

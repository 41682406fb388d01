"""RFC 7009 revocation of a client_credentials access token by its own client, decided in batches.

The common revocation (a project's API key revokes one of its own access tokens) needs no replay of the token's
stream: the token's facts (its client, its project, its expiry; no user, no family) are in its verified claims, and
whether anything ended it already is in its stream's version. A stream still at version 1 holds only its issuance,
so the token is live until its expiry and its ``TokenRevoked`` is version 2; a racing revocation, sweep or deletion
makes that insert conflict, so the decision stays on the stream (optimistic concurrency, as in the expiry sweep).
The group committer decides a batch of such requests with one query for every token's and client's version and
saves their events in its transaction; anything else (a moved stream, a client changed since its copy was taken)
is left to the general path (``application.oauth.revocation``), which loads the stream and decides on it.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID, uuid4

from application.oauth.revocation import REVOKED_BY_CLIENT
from application.ports import Clock
from application.store import Keyledger, Unsaved
from domain.client import Client
from domain.ids import client_actor
from domain.token import Token


@dataclass(frozen=True, slots=True)
class ClientTokenRevocation:
    """A known client revoking one of its client_credentials access tokens, described by its verified claims."""

    client: Client  # the private copy the presented secret verified against; its version must still be current
    token_id: UUID
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class RevocationOutcome:
    """What the batch decided: ``decided`` False leaves the request to the general path."""

    decided: bool
    revoked: int = 0
    aggregates: tuple[Unsaved, ...] = ()


UNDECIDED = RevocationOutcome(decided=False)


@dataclass(frozen=True, slots=True)
class ClientTokenRevoker:
    """Decides batches of ``ClientTokenRevocation`` on stream versions (the group committer's hot path)."""

    app: Keyledger
    clock: Clock

    def decide_batch(self, requests: Sequence[ClientTokenRevocation]) -> list[RevocationOutcome]:
        """One outcome per request, from one read of the versions of every token and client in the batch."""
        versions = self.app.versions([r.token_id for r in requests] + [r.client.id for r in requests])
        now = self.clock.now()
        taken: set[UUID] = set()
        outcomes = []
        for request in requests:
            current = versions.get(request.client.id) == request.client.version
            if not current or versions.get(request.token_id) != 1 or request.token_id in taken:
                outcomes.append(UNDECIDED)  # the client or the token moved, or a twin in this batch: general path
            elif now >= request.expires_at:
                outcomes.append(RevocationOutcome(decided=True))  # expired: nothing to revoke (RFC 7009 2.2)
            else:
                taken.add(request.token_id)
                outcomes.append(self._revoke(request))
        return outcomes

    @staticmethod
    def _revoke(request: ClientTokenRevocation) -> RevocationOutcome:
        client = request.client
        revoked = Token.revocation_of_issued(token_id=request.token_id, project_id=client.project_id,
                                             client_id=client.client_id, reason=REVOKED_BY_CLIENT,
                                             actor=client_actor(client.client_id), revocation_id=uuid4())
        return RevocationOutcome(decided=True, revoked=1, aggregates=(Unsaved(revoked),))

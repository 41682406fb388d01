"""RFC 7009 revocation, decided in batches: a client_credentials access token by its own client, and a dashboard
access token by the dashboard.

The common revocation (a project's API key revokes one of its own access tokens) is decided by the group committer
for a whole batch at once: one read of every batch token's stream and every batch client's version, each token
revoked on its stream (``Token.revocation_of_issued`` for a stream that holds only its issuance, ``Token.revoke``
otherwise: the event the general path records) and every event saved in the batch's transaction. The presented
string only names the stream (its ``jti``): whether the token was issued to this client, and whether it is still
live, is decided on the stream, never on the string's claims, so for a client authenticated by its secret no
signature check is needed to trust anything.
Whatever is not plainly such a revocation (a client changed since its copy was taken, a token of another client or
of a login's family, an unknown id, a twin in the batch) is left to the general path
(``application.oauth.revocation``), which verifies the token and answers as RFC 7009 says.

The dashboard, a public client, revokes its users' access tokens in the same batches. It has no secret, so here the
presented string is what proves the caller holds the token: its keyed hash must be the one the token's
``TokenIssued`` recorded (``domain.token.proves``), so the string is the very token issued, which no signature check
could make surer (and one costs an ECDSA verification, a third of such a request). A jti alone revokes nothing; a
token recorded without a hash (issued before it was recorded) is left to the general path, which verifies it.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from application.oauth.revocation import REVOKED_BY_CLIENT
from application.ports import Clock
from application.store import Keyledger, mutate_all
from domain.client import Client, PublicClient
from domain.errors import InvariantViolated
from domain.ids import client_actor
from domain.token import Token, TokenKind, proves

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ClientTokenRevocation:
    """A known client, or the dashboard presenting the token itself, revoking the access token ``token_id`` names.

    Attributes:
        client: The private copy the presented secret verified against (its version must still be current), or the
            public dashboard client.
        token_id: The stream named by the presented token's ``jti``.
        value_hash: For the public client: the keyed hash of the presented string, which must be the one the
            token's issuance recorded; None for a confidential client, whose secret authenticated it.
    """

    client: Client | PublicClient
    token_id: UUID
    value_hash: str | None = None


@dataclass(frozen=True, slots=True)
class RevocationOutcome:
    """What the batch decided: ``decided`` False leaves the request to the general path. ``aggregates`` are what the
    group committer saves: objects whose ``collect_events`` gives the events to record."""

    decided: bool
    revoked: int = 0
    aggregates: tuple[Any, ...] = ()


UNDECIDED = RevocationOutcome(decided=False)


@dataclass(slots=True)
class Decided:
    """Events decided without replaying their aggregate, handed to the committer as an aggregate's pending ones."""

    events: list[Any]

    def collect_events(self) -> list[Any]:
        """The events, once (as an aggregate hands out its pending events)."""
        events, self.events = self.events, []
        return events


@dataclass(frozen=True, slots=True)
class ClientTokenRevoker:
    """Decides batches of ``ClientTokenRevocation`` on the tokens' streams (the group committer's hot path)."""

    app: Keyledger
    clock: Clock

    def decide_batch(self, requests: Sequence[ClientTokenRevocation]) -> list[RevocationOutcome]:
        """One outcome per request, from one read of the batch's token streams and its clients' versions.

        A stream that holds only its ``TokenIssued`` (a live token never touched since: the common case) is decided
        on that event (``Token.revocation_of_issued``) without replaying the aggregate; any other is replayed and
        decided by ``Token.revoke``, as the general path does.
        """
        versioned = [r.client.id for r in requests if isinstance(r.client, Client)]
        try:
            streams, versions = self.app.streams_and_versions([r.token_id for r in requests], Token, versioned)
        except Exception as exc:  # the committer's batch also holds token requests: they must not fail with it
            logger.warning("batched revocations: %s, left to the general path", type(exc).__name__)
            return [UNDECIDED] * len(requests)
        now = self.clock.now()
        taken: set[UUID] = set()
        outcomes = []
        for request in requests:
            stream = streams.get(request.token_id)
            if not _current(request, versions) or stream is None or not _own(
                    stream[0], request) or request.token_id in taken:
                outcomes.append(UNDECIDED)
                continue
            taken.add(request.token_id)
            outcomes.append(self._decide(stream, request.client, now))
        return outcomes

    @staticmethod
    def _decide(stream: list[Any], client: Client | PublicClient, now: datetime) -> RevocationOutcome:
        """Revokes the client's token of ``stream`` if it is still live (RFC 7009 2.2: otherwise nothing to do)."""
        actor, revocation_id = client_actor(client.client_id), uuid4()
        if len(stream) == 1:
            try:
                event = Token.revocation_of_issued(stream[0], now=now, reason=REVOKED_BY_CLIENT, actor=actor,
                                                   revocation_id=revocation_id)
            except InvariantViolated:
                return RevocationOutcome(decided=True)  # expired already
            return RevocationOutcome(decided=True, revoked=1, aggregates=(Decided([event]),))
        # Any later event ends an access token (revoked, expired), so this is not expected to revoke anything; the
        # aggregate decides all the same, so an event added to the domain later cannot be skipped here.
        token = mutate_all(None, stream)
        if not token.revocable(now):
            return RevocationOutcome(decided=True)  # revoked or expired already
        token.revoke(reason=REVOKED_BY_CLIENT, actor=actor, revocation_id=revocation_id)
        return RevocationOutcome(decided=True, revoked=1, aggregates=(token,))


def _current(request: ClientTokenRevocation, versions: dict[UUID, int]) -> bool:
    """Whether what authenticated the request still holds: the client's copy is its stream's current version, or
    (public client) the request carries the presented string's hash to prove it with."""
    if isinstance(request.client, Client):
        return versions.get(request.client.id) == request.client.version
    return request.value_hash is not None


def _own(issued: Any, request: ClientTokenRevocation) -> bool:
    """Whether the stream's ``TokenIssued`` is of an access token the client got: with client_credentials (no login
    family) for a project client; for the public client, one of its access tokens whose recorded hash the presented
    string's is."""
    if not isinstance(issued, Token.TokenIssued) or issued.kind != TokenKind.ACCESS:
        return False
    client = request.client
    if isinstance(client, PublicClient):
        return issued.client_id == client.client_id and proves(issued, request.value_hash or "")
    return issued.client_id == client.client_id and issued.project_id == client.project_id and issued.family_id is None

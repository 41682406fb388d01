"""RFC 7009 revocation of a live refresh token by its own public client (a dashboard logout), decided in batches.

A logout ends the login's family: the presented refresh token and every live token of its family (RFC 7009 section
2.1: revoking a refresh token revokes the access tokens issued with it). The general path
(``Revoker.revoke_family`` with the presented token) does it in a worker thread with reads of its own; here the
group committer decides a whole batch of logouts with one statement (``projections.family_reads``) reading the token
lookup model (the presented tokens' rows and their families' active tokens) and the streams of those tokens and the
presented tokens' parents (one more read for a rotation whose access token the model has not applied yet), and saves
every ``TokenRevoked`` in the batch's transaction, which lists each revoked token (DESIGN.md invariant 1), so the
caller hears "revoked" only once every process refuses the family.

The decision is the general path's, on the same reasoning (see ``Revoker.revoke_family``): the presented token is
live, so the model need only hold its row, as active (every later token of the family descends from it, and rotating
it would move its stream, which this revocation's save conflicts with); it and its parent are roots whose streams'
children are followed (a rotation's access token is named by the parent's stream); the family's tokens the model
lists are revoked while revocable, the others only while live (``to_revoke``). Whatever is not plainly that (an
unknown, used, revoked or expired refresh token, another client's, a model that does not hold the token yet, a
family another request of the batch touches) is left to the general path, which waits for the model, answers as RFC
7009 says and detects nothing less. The opaque refresh token is the proof: its keyed hash names its stream, and
nothing else does.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID, uuid4

from application.oauth.client_revocation import UNDECIDED, Decided, RevocationOutcome
from application.oauth.revocation import REVOKED_BY_CLIENT, load_tokens, to_revoke
from application.ports import Clock, FamilyReader, FamilySelection, TokenIndex
from application.store import Keyledger
from domain.client import PublicClient
from domain.ids import client_actor
from domain.token import Token, TokenKind

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FamilyRevocation:
    """A public client revoking the refresh token whose stream ``token_id`` is (named by the presented token's keyed
    hash): a logout."""

    client: PublicClient
    token_id: UUID


@dataclass(frozen=True, slots=True)
class _Batch:
    """What one batch of logouts read: each presented token the model holds, with its family's selection, the live
    presented tokens as their streams have them, and every token loaded, by family."""

    selections: dict[UUID, FamilySelection]
    presented: dict[UUID, Token]
    families: dict[UUID, list[Token]]
    now: datetime


@dataclass(frozen=True, slots=True)
class FamilyRevoker:
    """Decides batches of ``FamilyRevocation`` (the group committer's decider for logouts)."""

    app: Keyledger
    clock: Clock
    index: TokenIndex
    reads: FamilyReader | None = None  # the model's families and the streams in one read (else two)

    def decide_batch(self, requests: Sequence[FamilyRevocation]) -> list[RevocationOutcome]:
        """One outcome per request, from one read for the whole batch with ``reads`` (two without): the model's rows
        of the presented tokens with their families' active tokens, and the streams of all those tokens and of the
        presented tokens' parents (plus one read per generation of children the model does not list yet, as
        ``Revoker.revoke_family`` follows them).

        A read that fails leaves the whole batch of logouts to the general path, which meets the failure again and
        answers it: the other requests the committer decides and saves with them must not fail with it.
        """
        try:
            batch = self._read(requests)
        except Exception as exc:
            logger.warning("batched logouts: %s, left to the general path", type(exc).__name__)
            return [UNDECIDED] * len(requests)
        taken: set[UUID] = set()
        return [self._decide(request, batch, taken) for request in requests]

    def _read(self, requests: Sequence[FamilyRevocation]) -> _Batch:
        """The model first, the streams after (or both in one statement's snapshot, with ``reads``): the streams
        decide, and a token of the family issued after the model was read descends from a presented token that is
        then no longer live (see the module)."""
        ids = [r.token_id for r in requests]
        first: dict[UUID, Token] | None = None
        if self.reads is None:
            selections = self.index.families_as_of(ids)
        else:  # one statement, one snapshot (``projections.family_reads``): the streams of exactly these tokens
            selections, stored = self.reads.read(ids)
            first = self.app.replayed(stored, Token)
        roots = [i for token_id, s in selections.items() for i in (token_id, s.parent_id) if i is not None]
        named = [i for s in selections.values() for i in s.live]
        loaded = load_tokens(self.app, [*roots, *named], follow_children=True, first=first)
        now = self.clock.now()
        presented = {i: token for i, s in selections.items() if (token := loaded.get(i)) is not None
                     and _live_refresh(token, now) and (token.family_id, token.parent_id) == (s.family_id, s.parent_id)}
        families: dict[UUID, list[Token]] = {}
        for token in loaded.values():
            if token.family_id is not None:
                families.setdefault(token.family_id, []).append(token)
        return _Batch(selections=selections, presented=presented, families=families, now=now)

    @staticmethod
    def _decide(request: FamilyRevocation, batch: _Batch, taken: set[UUID]) -> RevocationOutcome:
        """Revokes the presented token's family if this batch can decide it alone (see the module)."""
        token = batch.presented.get(request.token_id)  # None also while the model lacks the token's row
        if token is None or token.client_id != request.client.client_id or token.family_id is None:
            return UNDECIDED
        family = batch.families.get(token.family_id, [])
        if any(t.id in taken for t in family):
            return UNDECIDED  # a twin, or a family another request of the batch decided on
        taken.update(t.id for t in family)
        tokens = to_revoke(family, named=set(batch.selections[token.id].live), now=batch.now)
        actor, revocation_id = client_actor(request.client.client_id), uuid4()
        events = [t.revocation(reason=REVOKED_BY_CLIENT, actor=actor, revocation_id=revocation_id) for t in tokens]
        return RevocationOutcome(decided=True, revoked=len(events), aggregates=(Decided(events),))


def _live_refresh(token: Token, now: datetime) -> bool:
    """Whether ``token`` is a live refresh token of a login's family (anything else is the general path's)."""
    return token.kind == TokenKind.REFRESH and token.family_id is not None and token.is_live(now)

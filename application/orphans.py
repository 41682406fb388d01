"""The orphan sweep: revokes live tokens of deleted clients, which an interrupted deletion left behind.

``TokenAdmin.delete_client`` commits ``ClientRevoked`` with the revocation of the tokens it selected, then revokes
in late passes the tokens issued while it ran. If its process dies between the two, those tokens stay live until
they expire, unless someone repeats the DELETE. This sweep closes that window without anyone's help (and also
catches tokens that processes of an earlier build, which issue without the client-version guard, saved after the
revocation).

Candidates come from the read models (``projections.orphaned_tokens``); the decision is taken on the event streams,
never on a projection: a candidate is revoked only if its client's own stream says revoked, in the project the
candidate's row names, and the token's own stream names that client and project. The revocations read like the
deletion's own late pass (reason ``CLIENT_DELETED``, by ``system``), and go through the ``Revoker``: a token already
revoked or expired on its stream records nothing, and two sweeps racing on a token conflict on its version, so none
is revoked twice.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID

from application.oauth.revocation import Revoker
from application.store import Keyledger
from application.token_admin import CLIENT_DELETED
from domain.client import Client
from domain.ids import SYSTEM_ACTOR, client_aggregate_id
from domain.token import Token

OrphanCursor = tuple[UUID, str, datetime, UUID]


@dataclass(frozen=True, slots=True)
class OrphanCandidate:
    """An active, unexpired token whose client the clients model lists as revoked (copies of read model columns)."""

    token_id: UUID
    project_id: UUID
    client_id: str
    issued_at: datetime

    @property
    def cursor(self) -> OrphanCursor:
        """The candidate's place in the sweep's order."""
        return (self.project_id, self.client_id, self.issued_at, self.token_id)


class OrphanCandidates(Protocol):
    """Where the orphan sweep finds candidates (``projections.orphaned_tokens``)."""

    def orphaned_tokens(self, now: datetime, limit: int, after: OrphanCursor | None) -> list[OrphanCandidate]:
        """Candidates by ``(project_id, client_id, issued_at, token_id)``, after ``after``."""
        ...


@dataclass(frozen=True, slots=True)
class OrphanSweepResult:
    """One run: ``revoked`` tokens, ``spared`` candidates whose streams did not confirm a deleted client, ``batches``
    read, ``more`` left for the next run."""

    revoked: int
    spared: int
    batches: int
    more: bool


@dataclass(frozen=True, slots=True)
class OrphanSweep:
    """Revokes the live tokens of deleted clients, ``batch_size`` candidates per page, ``max_batches`` per run."""

    app: Keyledger
    revoker: Revoker
    index: OrphanCandidates
    batch_size: int = 1000
    max_batches: int = 20  # one run's bound: a backlog (there should be none) drains run by run

    def run(self) -> OrphanSweepResult:
        """Sweeps up to ``max_batches`` pages of candidates."""
        revoked = spared = batches = 0
        for page in self._pages(self.revoker.clock.now()):
            batches += 1
            done, skipped = self.revoke_page(page)
            revoked, spared = revoked + done, spared + skipped
            if batches >= self.max_batches:
                return OrphanSweepResult(revoked=revoked, spared=spared, batches=batches, more=True)
        return OrphanSweepResult(revoked=revoked, spared=spared, batches=batches, more=False)

    def _pages(self, now: datetime) -> Iterator[list[OrphanCandidate]]:
        """Pages of candidates in the cursor's order: rows revoked by this run that the lookup model has not
        applied yet are behind the cursor, so the run neither waits for the projection nor reads a row twice."""
        after: OrphanCursor | None = None
        while page := self.index.orphaned_tokens(now, self.batch_size, after):
            yield page
            if len(page) < self.batch_size:
                return
            after = page[-1].cursor

    def revoke_page(self, page: Sequence[OrphanCandidate]) -> tuple[int, int]:
        """Revokes the page's candidates that the streams confirm; returns (revoked, spared).

        The page's clients are read in one query; each deleted client's tokens of the page are revoked in a
        transaction of their own, under a revocation id of their own: the audit ledger never groups two clients' (or
        two projects') tokens as one revocation. A sweep that meets a deletion's own late pass on a token conflicts
        with it on the token's version; the loser's retry finds it revoked and records nothing.
        """
        by_client: dict[tuple[UUID, str], list[UUID]] = {}
        for candidate in page:
            by_client.setdefault((candidate.project_id, candidate.client_id), []).append(candidate.token_id)
        clients = self.app.find_many([client_aggregate_id(client_id) for _, client_id in by_client], Client)
        revoked = spared = 0
        for (project_id, client_id), token_ids in by_client.items():
            tokens = self.confirmed(clients.get(client_aggregate_id(client_id)), project_id, token_ids)
            spared += len(token_ids) - len(tokens)
            if tokens:
                ids = [t.id for t in tokens]
                revoked += self.revoker.revoke_ids(lambda ids=ids: ids, reason=CLIENT_DELETED, actor=SYSTEM_ACTOR,
                                                   selects_on_index=False, first=tokens)
        return revoked, spared

    def confirmed(self, client: Client | None, project_id: UUID, token_ids: Sequence[UUID]) -> list[Token]:
        """The tokens among ``token_ids`` that the streams say belong to a deleted client, in ``project_id``.

        None unless the client's stream says revoked in that project (the read models may lag or disagree); then
        those whose own stream names that client and project. Tokens already revoked, used up or expired are
        kept: the ``Revoker`` records nothing for them.
        """
        if client is None or not client.revoked or client.project_id != project_id:
            return []
        return [t for t in self.app.find_many(token_ids, Token).values()
                if t.client_id == client.client_id and t.project_id == client.project_id]

"""Expiry sweeps: recording ``TokenExpired`` and ``ClientSecretExpired`` for what has reached its expiry.

The sweeps are bookkeeping, never a condition of correctness: validation, introspection and client authentication
compare expiry instants themselves, so an expired token or secret is refused at its instant even if no sweep ever
runs. What the sweeps add is the history (an auditor sees when each token ended) and a small hot table.

Each decision is taken on the aggregate's own stream: a token revoked or already expired records nothing, and two
sweeps racing on one token conflict on its version (optimistic concurrency), so none is ever expired twice.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from application.ports import Clock
from application.store import Keyledger
from domain.client import Client
from domain.ids import SYSTEM_ACTOR
from domain.token import Token

Cursor = tuple[datetime, UUID]


@dataclass(frozen=True, slots=True)
class DueToken:
    """A candidate of the sweep as the token lookup model has it (copies of its ``TokenIssued`` fields)."""

    token_id: UUID
    expires_at: datetime
    project_id: UUID | None
    client_id: str
    kind: str

    @property
    def cursor(self) -> Cursor:
        """The candidate's place in the sweep's order."""
        return (self.expires_at, self.token_id)


class DueTokens(Protocol):
    """Where the token sweep finds candidates: the token lookup model."""

    def due_for_expiry(self, now: datetime, limit: int, after: Cursor | None) -> list[DueToken]:
        """Active tokens past expiry, by ``(expires_at, token_id)``, after ``after``."""
        ...


class DueSecrets(Protocol):
    """Where the secret sweep finds candidates: the secret expiry model."""

    def due_secrets(self, now: datetime, limit: int, after: tuple[datetime, str] | None) -> list[tuple[datetime,
                                                                                                      str]]:
        """``(expires_at, client_id)`` of clients with a secret past expiry and not yet recorded, after ``after``."""
        ...


@dataclass(frozen=True, slots=True)
class SweepResult:
    """What one sweep run did: ``expired`` events recorded, ``batches`` read, ``more`` left for the next run."""

    expired: int
    batches: int
    more: bool


@dataclass(frozen=True, slots=True)
class TokenSweep:
    """Records ``TokenExpired`` for active tokens past their expiry, ``batch_size`` per transaction."""

    app: Keyledger
    clock: Clock
    index: DueTokens
    batch_size: int = 2000
    max_batches: int = 100  # one run's bound; the next run (or the job re-enqueueing itself) continues

    def run(self) -> SweepResult:
        """Sweeps up to ``max_batches`` batches of due tokens."""
        now = self.clock.now()
        expired = batches = 0
        for page in self._pages(now):
            batches += 1
            expired += self.expire_due(page, now)
            if batches >= self.max_batches:
                return SweepResult(expired=expired, batches=batches, more=True)
        return SweepResult(expired=expired, batches=batches, more=False)

    def _pages(self, now: datetime) -> Iterator[list[DueToken]]:
        """Pages of due tokens, by (expiry, id): the cursor skips rows this run expired that the model has not
        moved yet, so the run neither waits for the projection nor reads a row twice."""
        after: Cursor | None = None
        while True:
            page = self.index.due_for_expiry(now, self.batch_size, after)
            if not page:
                return
            yield page
            if len(page) < self.batch_size:
                return
            after = page[-1].cursor

    def expire_due(self, due: Sequence[DueToken], now: datetime) -> int:
        """Expires a page of candidates; returns how many expiries it recorded.

        Bulk path (a recorder that reads stream versions): a token whose stream is still at version 1 holds only
        its issuance, so it is active and its expiry is the one the model copied from ``TokenIssued``; its
        ``TokenExpired`` is version 2, built directly, and the page's are inserted in one transaction with no
        stream read. That is the common case, so it is tried first: if any token's stream has moved (the model
        lags a revocation, say), version 2 exists and the insert conflicts as a whole; the page is then split on
        the streams' versions, and tokens that moved are loaded and decided by their aggregates.
        """
        select_versions = getattr(self.app.recorder, "select_versions", None)
        if select_versions is None:
            return self.expire_batch([d.token_id for d in due], now)
        fresh = [d for d in due if now >= d.expires_at]
        if self._insert_expiries(fresh, now):
            return len(fresh)
        versions = select_versions([d.token_id for d in fresh])
        moved = [d.token_id for d in fresh if versions.get(d.token_id, 0) > 1]
        recorded = self.expire_batch(moved, now) if moved else 0
        unmoved = [d for d in fresh if versions.get(d.token_id) == 1]
        if self._insert_expiries(unmoved, now):
            return recorded + len(unmoved)
        return recorded + sum(self._expire_one(d.token_id, now) for d in unmoved)  # still racing: one by one

    def _insert_expiries(self, due: Sequence[DueToken], now: datetime) -> bool:
        """Inserts the version-2 ``TokenExpired`` of every token in ``due`` atomically; False on a conflict."""
        if not due:
            return True
        events = [Token.expiry_of_issued(token_id=d.token_id, project_id=d.project_id, client_id=d.client_id,
                                         kind=d.kind, expires_at=d.expires_at, now=now, actor=SYSTEM_ACTOR)
                  for d in due]
        try:
            self.app.recorder.insert_events([self.app.mapper.to_stored_event(e) for e in events])
        except IntegrityError:
            return False
        return True

    def expire_batch(self, token_ids: Sequence[UUID], now: datetime) -> int:
        """Expires the batch's expirable tokens in one transaction; returns how many it recorded.

        A conflict (a token revoked or expired by someone else meanwhile) falls back to one transaction per token,
        where each conflict means that token's end is already recorded: nothing is lost and nothing doubled.
        """
        tokens = [t for t in self.app.find_many(token_ids, Token).values() if t.expirable(now)]
        for token in tokens:
            token.expire(now=now, actor=SYSTEM_ACTOR)
        if not tokens:
            return 0
        try:
            self.app.save(*tokens)
            return len(tokens)
        except IntegrityError:
            return sum(self._expire_one(token.id, now) for token in tokens)

    def _expire_one(self, token_id: UUID, now: datetime) -> int:
        token = self.app.find_many([token_id], Token).get(token_id)
        if token is None or not token.expirable(now):
            return 0
        token.expire(now=now, actor=SYSTEM_ACTOR)
        try:
            self.app.save(token)
        except IntegrityError:
            return 0
        return 1


@dataclass(frozen=True, slots=True)
class SecretSweep:
    """Records ``ClientSecretExpired`` for client secrets (current, or previous after its grace) past expiry."""

    app: Keyledger
    clock: Clock
    index: DueSecrets
    batch_size: int = 500

    def run(self) -> SweepResult:
        """Sweeps every due secret (there are few: one or two per client)."""
        now = self.clock.now()
        expired = batches = 0
        after: tuple[datetime, str] | None = None
        while page := self.index.due_secrets(now, self.batch_size, after):
            batches += 1
            expired += sum(self.expire_client(client_id, now) for _, client_id in page)
            if len(page) < self.batch_size:
                break
            after = page[-1]
        return SweepResult(expired=expired, batches=batches, more=False)

    def expire_client(self, client_id: str, now: datetime) -> int:
        """Records the client's due secret expiries; a concurrent change means another run or command got there."""
        client = self.app.find(Client.create_id(client_id), Client)
        recorded = len(client.expirable_secrets(now)) if client is not None else 0
        if client is None or not recorded:
            return 0
        client.expire_secrets(now=now, actor=SYSTEM_ACTOR)
        try:
            self.app.save(client)
        except IntegrityError:
            return 0
        return recorded

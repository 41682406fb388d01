"""Telling a concurrent refresh from a replayed one (RFC 9700 section 4.14.2, refresh token rotation).

Rotation makes a presented refresh token used; presenting a used token again is reuse, which revokes the token's
whole family. But two requests with one refresh token can be in flight together (two browser tabs refreshing at
the same moment, a retry sent before the first answer came): the one that commits first wins, and the other finds
the token used. That loser is not a replay: its client could not have seen the rotation's answer when it sent it,
and revoking the family for it would end the winner's new tokens a few milliseconds after they were handed out,
so that "exactly one succeeds" would in fact mean "none does".

A presentation is therefore in flight, refused with ``invalid_grant`` and nothing revoked, when the server received
it before the rotation was answered: before the rotation's decision (``Token.used_at``), or before the instant the
winner recorded just before sending its answer (``RotationAnswers``). The winner marks the rotation unanswered when
it decides it, before its save, so a loser that finds the token used while the winner has not answered yet is in
flight whenever it was received. Anything received after the answer is reuse. When nothing is recorded (the record
expired or was lost), the rule falls back to the decision instant alone: the strict side, so losing the record
never lets a replay pass.

A deployment may widen "before the answer" by a leeway (``LifetimePolicy.refresh_reuse_leeway``, 0 by default):
requests a client sent together can arrive a few milliseconds apart, the last ones after a fast answer. Within the
leeway such a straggler is refused without revoking anything; so is a replay, which then obtains nothing either,
but is only detected once the leeway has passed.
"""

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol
from uuid import UUID

from domain.token import Token

UNANSWERED = datetime.max.replace(tzinfo=UTC)  # ``answered_at`` of a rotation decided and not answered yet


class RotationAnswers(Protocol):
    """Where a rotation's answer instant is kept, shared by every API process."""

    def unanswered(self, token_id: UUID) -> None:
        """Records, unless something is recorded already, that a rotation of ``token_id`` is decided and not yet
        answered (kept only as long as a save may take: after that, the decision instant alone judges)."""
        ...

    def answered(self, token_id: UUID, at: datetime) -> None:
        """Records that the rotation of the refresh token ``token_id`` was answered at ``at``."""
        ...

    def answered_at(self, token_id: UUID) -> datetime | None:
        """When the rotation of ``token_id`` was answered, ``UNANSWERED`` while it is not yet, or None if nothing is
        recorded (or no longer)."""
        ...


class MemoryRotationAnswers:
    """``RotationAnswers`` of one process, kept forever (unit tests)."""

    def __init__(self) -> None:
        self._at: dict[UUID, datetime] = {}
        self._lock = threading.Lock()

    def unanswered(self, token_id: UUID) -> None:
        """Marks the rotation unanswered unless something is recorded."""
        with self._lock:
            self._at.setdefault(token_id, UNANSWERED)

    def answered(self, token_id: UUID, at: datetime) -> None:
        """Records the answer instant."""
        with self._lock:
            self._at[token_id] = at

    def answered_at(self, token_id: UUID) -> datetime | None:
        """The recorded answer instant (or ``UNANSWERED``), if any."""
        with self._lock:
            return self._at.get(token_id)


def in_flight(token: Token, received_at: datetime | None, answers: RotationAnswers | None,
              leeway: timedelta = timedelta(0)) -> bool:
    """Whether a presentation of the used refresh ``token``, received at ``received_at``, was sent before its
    rotation could have been answered, give or take ``leeway`` (see the module docstring). Unknown instants count
    as reuse."""
    if received_at is None or token.used_at is None:
        return False
    if received_at < token.used_at + leeway:
        return True
    answered = answers.answered_at(token.id) if answers is not None else None
    if answered is None:
        return False
    return answered == UNANSWERED or received_at < answered + leeway

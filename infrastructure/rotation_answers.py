"""``RotationAnswers`` on Redis: when each refresh token's rotation was answered, seen by every API process.

One key per rotation, ``{prefix}:rotation:{token id}``. The decision sets it to ``pending`` if it is absent, for
``PENDING_TTL`` seconds (longer than the group commit waits for a save: a winner that dies between its save and
its answer leaves its mark only that long); the answer sets it to the answer instant, in microseconds since the
epoch, for ``TTL`` seconds: long past any request that could still be in flight, after which the decision instant
alone judges a presentation (application.oauth.in_flight), as it then would anyway. The key names a token's id,
never a token value.

The token endpoint records answers on its event loop (``AsyncRedisRotationAnswers``, the same key and value) right
before it answers: a hop to a worker thread for one Redis write costs a refresh more than the write itself.

Failures never fail a refresh: a record that cannot be written is logged (the decision stands, and a committed
rotation's answer is owed to the client); a record that cannot be read counts as absent, the strict side (a
presentation after the rotation's decision is reuse).
"""

import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import redis
import redis.asyncio

from application.oauth.in_flight import UNANSWERED

logger = logging.getLogger(__name__)

TTL = 300
PENDING_TTL = 15
_PENDING = b"pending"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def key_prefix(prefix: str) -> str:
    """The keys' common start under a deployment's prefix (both classes below must agree on it)."""
    return f"{prefix}:rotation:"


class RedisRotationAnswers:
    """Answer instants of rotations in Redis, under a deployment's key prefix."""

    def __init__(self, client: Any, *, prefix: str) -> None:
        self._redis = client
        self._prefix = key_prefix(prefix)

    def unanswered(self, token_id: UUID) -> None:
        """Marks the rotation pending unless something is recorded (logged, not raised, if Redis does not take it)."""
        try:
            self._redis.set(self._prefix + token_id.hex, _PENDING, ex=PENDING_TTL, nx=True)
        except redis.RedisError as exc:
            logger.warning("could not mark a rotation pending: %s", type(exc).__name__)

    def answered(self, token_id: UUID, at: datetime) -> None:
        """Records the answer instant (logged, not raised, if Redis does not take it)."""
        try:
            self._redis.set(self._prefix + token_id.hex, _micros(at), ex=TTL)
        except redis.RedisError as exc:
            _unrecorded(exc)

    def answered_at(self, token_id: UUID) -> datetime | None:
        """The recorded answer instant, ``UNANSWERED`` while pending, or None (also when Redis does not answer)."""
        try:
            raw = self._redis.get(self._prefix + token_id.hex)
        except redis.RedisError as exc:
            logger.warning("could not read a rotation's answer instant: %s", type(exc).__name__)
            return None
        if raw is None:
            return None
        return UNANSWERED if raw == _PENDING else _EPOCH + timedelta(microseconds=int(raw))


class AsyncRedisRotationAnswers:
    """The answer side of ``RedisRotationAnswers`` for an event loop (same keys, same values)."""

    def __init__(self, client: redis.asyncio.Redis, *, prefix: str) -> None:
        self._redis = client
        self._prefix = key_prefix(prefix)

    async def answered(self, token_id: UUID, at: datetime) -> None:
        """Records the answer instant (logged, not raised, if Redis does not take it)."""
        try:
            await self._redis.set(self._prefix + token_id.hex, _micros(at), ex=TTL)
        except redis.RedisError as exc:
            _unrecorded(exc)


def _micros(at: datetime) -> int:
    """An instant as microseconds since the epoch (what ``answered_at`` reads back)."""
    return (at - _EPOCH) // timedelta(microseconds=1)


def _unrecorded(exc: Exception) -> None:
    logger.warning("could not record a rotation's answer instant: %s", type(exc).__name__)

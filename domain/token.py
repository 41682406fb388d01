"""Token aggregate: one access token or refresh token, from issuance to its end.

An access token's id is its ``jti``. A refresh token's id is uuid5 of its keyed hash, so presenting the token finds
its stream without any index, and the token itself is never recorded.
"""

from datetime import datetime
from enum import StrEnum
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import InvariantViolated


class TokenKind(StrEnum):
    """What a token is."""

    ACCESS = "access"
    REFRESH = "refresh"


class Token(Aggregate):
    """An issued credential's life. ``project_id`` is None for dashboard tokens, which are platform-wide."""

    @staticmethod
    def create_id(token_id: UUID) -> UUID:
        """The jti of an access token; uuid5 of the keyed hash for a refresh token."""
        return token_id

    @event("TokenIssued")
    def __init__(
        self,
        *,
        token_id: UUID,
        kind: TokenKind,
        project_id: UUID | None,
        client_id: str,
        user_id: UUID | None,
        scope: str,
        grant_type: str,
        issued_at: datetime,
        expires_at: datetime,
        family_id: UUID | None,
        parent_id: UUID | None,
        actor: str,
    ) -> None:
        self.kind = TokenKind(kind)
        self.project_id = project_id
        self.client_id = client_id
        self.user_id = user_id
        self.scope = scope
        self.grant_type = grant_type
        self.issued_at = issued_at
        self.expires_at = expires_at
        self.family_id = family_id
        self.parent_id = parent_id
        self.revoked = False

    def is_live(self, now: datetime) -> bool:
        """Whether the token may still be used at ``now``."""
        return not self.revoked and now < self.expires_at

    def revoke(self, *, reason: str, actor: str) -> None:
        """Revokes the token (RFC 7009); revoking twice is refused so the history stays exact."""
        self.check_not_revoked()
        self._revoke(project_id=self.project_id, reason=reason, actor=actor)

    @event("TokenRevoked")
    def _revoke(self, *, project_id: UUID | None, reason: str, actor: str) -> None:
        self.revoked = True

    def check_not_revoked(self) -> None:
        """Raises if the token is revoked."""
        if self.revoked:
            raise InvariantViolated("the token is revoked")

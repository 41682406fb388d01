"""Token aggregate: one access token or refresh token, from issuance to its end.

An access token's id is its ``jti``. A refresh token's id is uuid5 of its keyed hash, so presenting the token finds
its stream without any index, and the token itself is never recorded.
"""

from datetime import datetime
from enum import StrEnum
from hmac import compare_digest
from uuid import UUID

from eventsourcing.domain import event

from domain.entity import Entity
from domain.errors import InvariantViolated


class TokenKind(StrEnum):
    """What a token is."""

    ACCESS = "access"
    REFRESH = "refresh"


# A refresh token's stream once rotated: its TokenIssued and its TokenRefreshed. A login's first refresh token stays
# there while its family lives; a reuse detected on it or later in the family records more (``Token.end_family``).
ROTATED_ONCE = 2


class Token(Entity):
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
        family_expires_at: datetime | None,
        value_hash: str | None = None,
        account_version: int | None = None,
    ) -> None:
        """``value_hash`` is the keyed hash of the token's value where its holder has no secret to authenticate
        with (a login's access tokens, held by the public dashboard client): presenting a string with that hash
        proves the string is the very token issued (``proves``). None for other tokens. ``account_version``: the
        version of the person's account stream the grant was decided on (a login's, a rotation's; None for a
        client's token): a session is older than a password change by it (``User.predates_password_change``). Their
        defaults only serve the replay of events recorded before they existed: eventsourcing requires every
        keyword-only argument of a new aggregate, so creators pass them."""
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
        self.family_expires_at = family_expires_at
        self.value_hash = value_hash
        self.account_version = account_version
        self.revoked = False
        self.used = False
        self.used_at: datetime | None = None
        self.expired = False
        self.children: tuple[UUID, ...] = ()
        self.reuse_detected = False
        self.family_ended = False

    def is_live(self, now: datetime) -> bool:
        """Whether the token may still be used at ``now`` (a used refresh token is not)."""
        return not self.revoked and not self.used and not self.expired and now < self.expires_at

    def refusal(self, now: datetime) -> str | None:
        """Why a refresh with this token must be refused at ``now``, or None if it may be used."""
        if self.kind != TokenKind.REFRESH:
            return "not a refresh token"
        if self.used:
            return "reused"
        if self.revoked:
            return "revoked"
        # Recorded expired (by a sweep whose clock may run ahead of this one's): never used after that.
        family_over = self.family_expires_at is not None and now >= self.family_expires_at
        if self.expired or now >= self.expires_at or family_over:
            return "expired"
        return None

    def refresh(self, *, refresh_id: UUID, access_id: UUID, now: datetime, actor: str) -> None:
        """RFC 6749 section 6 with rotation: this refresh token is used up, its children are a new pair."""
        reason = self.refusal(now)
        if reason is not None:
            raise InvariantViolated(f"the refresh token cannot be used: {reason}")
        self._refresh(refresh_id=refresh_id, access_id=access_id, project_id=self.project_id, actor=actor,
                      client_id=self.client_id, user_id=self.user_id, family_id=self.family_id, used_at=now)

    # The client, user and family on the events after TokenIssued make each event self-describing, so the audit
    # ledger can file it under its client and user without looking the token up. Events recorded before they were
    # added lack them: the defaults let those replay. ``used_at`` is the decision's instant by the application's
    # clock (older events lack it: their reuse is then judged without it, see application.oauth.in_flight).
    @event("TokenRefreshed")
    def _refresh(self, *, refresh_id: UUID, access_id: UUID, project_id: UUID | None, actor: str,
                 client_id: str | None = None, user_id: UUID | None = None, family_id: UUID | None = None,
                 used_at: datetime | None = None) -> None:
        self.used = True
        self.used_at = used_at
        self.children = (refresh_id, access_id)

    def detect_reuse(self, *, actor: str, source: str | None) -> None:
        """Records that this already used refresh token was presented again (its family is to be revoked)."""
        if not self.used:
            raise InvariantViolated("only a used refresh token can be reused")
        self._reuse(project_id=self.project_id, family_id=self.family_id, source=source, actor=actor,
                    client_id=self.client_id, user_id=self.user_id)

    @event("RefreshTokenReuseDetected")
    def _reuse(self, *, project_id: UUID | None, family_id: UUID | None, source: str | None, actor: str,
               client_id: str | None = None, user_id: UUID | None = None) -> None:
        self.reuse_detected = True

    def family_over(self) -> bool:
        """On a login's first refresh token: whether a reuse ended its family, detected on this token itself or on a
        later one of the family (``end_family``)."""
        return self.family_ended or self.reuse_detected

    def end_family(self, *, actor: str) -> None:
        """Records on a login's first refresh token (its id is the family's) that no token of the family may be
        refreshed any more: a reuse was detected. The family's revocation can miss tokens its walk does not reach
        (``Revoker.revoke_lineage``, bounded while the token lookup model lags); every rotation of a later token is
        guarded by this stream (``TokenEndpoint.family_guard``), so one presenting what the walk missed conflicts, is
        decided again on this mark, refused, and revokes whatever of the family is still live."""
        if self.kind != TokenKind.REFRESH or self.family_id != self.id:
            raise InvariantViolated("only a login's first refresh token records its family's end")
        if self.family_over():
            raise InvariantViolated("the family has ended already")
        self._end_family(project_id=self.project_id, client_id=self.client_id, user_id=self.user_id,
                         family_id=self.family_id, actor=actor)

    @event("RefreshFamilyEnded")
    def _end_family(self, *, project_id: UUID | None, client_id: str, user_id: UUID | None, family_id: UUID,
                    actor: str) -> None:
        self.family_ended = True

    def revoke(self, *, reason: str, actor: str, revocation_id: UUID | None = None) -> None:
        """Revokes the token (RFC 7009); revoking twice is refused so the history stays exact.

        ``revocation_id`` names the command that revoked it: every token of one bulk revocation carries the same.
        """
        self.check_not_revoked()
        self._revoke(project_id=self.project_id, reason=reason, actor=actor, client_id=self.client_id,
                     user_id=self.user_id, family_id=self.family_id, revocation_id=revocation_id)

    def revocation(self, *, reason: str, actor: str, revocation_id: UUID | None = None) -> "Token.TokenRevoked":
        """The ``TokenRevoked`` that ``revoke`` would record, built without applying it, for a caller that only saves
        the event and drops the aggregate (the batched logout): the ``@event`` machinery costs three times as much.
        Saving it conflicts if the stream moved since this aggregate was read."""
        self.check_not_revoked()
        return self.TokenRevoked(  # type: ignore[call-arg]
            originator_id=self.id, originator_version=self.version + 1, timestamp=self.TokenRevoked.create_timestamp(),
            project_id=self.project_id, reason=reason, actor=actor, client_id=self.client_id, user_id=self.user_id,
            family_id=self.family_id, revocation_id=revocation_id)

    @classmethod
    def revocation_of_issued(cls, issued: "Token.TokenIssued", *, now: datetime, reason: str, actor: str,
                             revocation_id: UUID | None = None) -> "Token.TokenRevoked":
        """The ``TokenRevoked`` of a token whose stream holds only ``issued`` (version 1), before its expiry.

        Exactly what ``revoke`` records for such a token (nothing can have ended it: any revocation, refresh or
        expiry would be version 2), built without replaying the stream: the batched revocation's hot path, as
        ``expiry_of_issued`` is the sweep's. Saving it conflicts on version 2 if the stream moved meanwhile.
        """
        if now >= issued.expires_at:
            raise InvariantViolated("the token is past its expiry")
        return cls.TokenRevoked(  # type: ignore[call-arg]
            originator_id=issued.originator_id, originator_version=issued.originator_version + 1,
            timestamp=cls.TokenRevoked.create_timestamp(), project_id=issued.project_id, reason=reason, actor=actor,
            client_id=issued.client_id, user_id=issued.user_id, family_id=issued.family_id,
            revocation_id=revocation_id)

    @event("TokenRevoked")
    def _revoke(self, *, project_id: UUID | None, reason: str, actor: str, client_id: str | None = None,
                user_id: UUID | None = None, family_id: UUID | None = None,
                revocation_id: UUID | None = None) -> None:
        self.revoked = True

    def check_not_revoked(self) -> None:
        """Raises if the token is revoked."""
        if self.revoked:
            raise InvariantViolated("the token is revoked")

    def revocable(self, now: datetime) -> bool:
        """Whether revoking still changes anything: not revoked, not expired (a used refresh token still is)."""
        return not self.revoked and not self.expired and now < self.expires_at

    def expirable(self, now: datetime) -> bool:
        """Whether recording the expiry changes anything: past its expiry, still active (not revoked, used or
        already expired). Used refresh tokens keep their status ``used``; their end is already recorded."""
        return not self.revoked and not self.used and not self.expired and now >= self.expires_at

    def expire(self, *, now: datetime, actor: str) -> None:
        """Records that the token reached its expiry (the sweep's bookkeeping; validation never waits for it)."""
        if not self.expirable(now):
            raise InvariantViolated("the token is not an active token past its expiry")
        self._expire(project_id=self.project_id, client_id=self.client_id, kind=str(self.kind),
                     expires_at=self.expires_at, expired_at=now, actor=actor)

    @classmethod
    def expiry_of_issued(cls, *, token_id: UUID, project_id: UUID | None, client_id: str, kind: str,
                         expires_at: datetime, now: datetime, actor: str) -> "Token.TokenExpired":
        """The ``TokenExpired`` event of a token whose stream holds only its issuance (version 1), past expiry.

        Exactly what ``expire`` records for such a token (nothing can have ended it: any revocation, refresh or
        expiry would be version 2), built without replaying the stream, for the sweep's bulk path. Saving it
        conflicts on version 2 if the stream moved meanwhile, so the decision stays on the stream.
        """
        if now < expires_at:
            raise InvariantViolated("the token is not past its expiry")
        return cls.TokenExpired(  # type: ignore[call-arg]
            originator_id=token_id, originator_version=2, timestamp=cls.TokenExpired.create_timestamp(),
            project_id=project_id, client_id=client_id, kind=kind, expires_at=expires_at, expired_at=now, actor=actor)

    @event("TokenExpired")
    def _expire(self, *, project_id: UUID | None, client_id: str, kind: str, expires_at: datetime,
                expired_at: datetime, actor: str) -> None:
        self.expired = True


def proves(issued: Token.TokenIssued, value_hash: str) -> bool:
    """Whether ``value_hash``, the keyed hash of a presented string, is the one ``issued`` recorded: the string is
    then that very token (compared in constant time). False where none was recorded (see ``Token.__init__``)."""
    recorded = getattr(issued, "value_hash", None)  # events recorded before the field existed lack it
    return recorded is not None and compare_digest(recorded, value_hash)

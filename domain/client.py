"""Client aggregate: a project's OAuth2 confidential client, i.e. its API key.

The dashboard is the platform's public client; it is not stored, its rules are the constant ``DASHBOARD``.
"""

from dataclasses import dataclass
from datetime import datetime
from hmac import compare_digest
from uuid import UUID

from eventsourcing.domain import event

from domain.entity import Entity
from domain.errors import InvariantViolated
from domain.ids import DASHBOARD_CLIENT_ID, client_aggregate_id
from domain.policy import DASHBOARD_GRANTS, PROJECT_CLIENT_GRANTS, GrantType
from domain.scopes import ALL_SCOPES


class Client(Entity):
    """A project's confidential client. Only the keyed hash of its secret is recorded, and a short hint."""

    @staticmethod
    def create_id(client_id: str) -> UUID:
        """Derives the aggregate id from the public client_id so a look-up needs no index."""
        return client_aggregate_id(client_id)

    @event("ClientCreated")
    def __init__(
        self,
        *,
        client_id: str,
        project_id: UUID,
        name: str,
        scope: str,
        secret_hash: str,
        secret_hint: str,
        secret_expires_at: datetime,
        access_token_ttl: int | None,
        actor: str,
    ) -> None:
        self.client_id = client_id
        self.project_id = project_id
        self.name = name
        self.scope = scope
        self.grant_types = " ".join(sorted(PROJECT_CLIENT_GRANTS))
        self.secret_hash = secret_hash
        self.secret_hint = secret_hint
        self.secret_expires_at = secret_expires_at
        self.previous_secret_hash: str | None = None
        self.previous_secret_expires_at: datetime | None = None
        self.secret_expired = False  # whether ClientSecretExpired was recorded for the current secret
        self.previous_secret_expired = False
        self.access_token_ttl = access_token_ttl
        self.revoked = False

    @property
    def scopes(self) -> frozenset[str]:
        """The scopes this client may be granted."""
        return frozenset(self.scope.split())

    def allows_grant(self, grant_type: str) -> bool:
        """Whether this client may use ``grant_type`` (RFC 6749 section 5.2 ``unauthorized_client`` otherwise)."""
        return grant_type in PROJECT_CLIENT_GRANTS

    def secret_matches(self, secret_hash: str, now: datetime) -> bool:
        """Compares a presented secret's keyed hash, in constant time, with the live secrets.

        The current secret is live until its expiry; the previous one, after a rotation, until its grace ends.
        """
        current = compare_digest(secret_hash, self.secret_hash) and now < self.secret_expires_at
        previous = False
        if self.previous_secret_hash is not None and self.previous_secret_expires_at is not None:
            previous = compare_digest(secret_hash, self.previous_secret_hash) and now < self.previous_secret_expires_at
        return (current or previous) and not self.revoked

    def secret_refusal(self, secret_hash: str, now: datetime) -> str:
        """Why a presented secret was refused, for the audit ledger: the client is revoked, the secret was one of
        the client's but has expired (the current one, or the previous one after its grace), or it is wrong.

        Compares in constant time, like ``secret_matches``; only called once a secret was refused.
        """
        if self.revoked:
            return "client_revoked"
        known = compare_digest(secret_hash, self.secret_hash)
        if self.previous_secret_hash is not None:
            known = compare_digest(secret_hash, self.previous_secret_hash) or known
        return "client_secret_expired" if known else "client_secret_wrong"

    def rotate_secret(self, *, secret_hash: str, secret_hint: str, secret_expires_at: datetime,
                      previous_secret_expires_at: datetime, actor: str) -> None:
        """Replaces the secret; the old one keeps working until ``previous_secret_expires_at``."""
        self.check_not_revoked()
        self._rotate_secret(secret_hash=secret_hash, secret_hint=secret_hint, secret_expires_at=secret_expires_at,
                            previous_secret_expires_at=previous_secret_expires_at, project_id=self.project_id,
                            actor=actor, client_id=self.client_id)

    # ``client_id`` on the events after ClientCreated lets the audit ledger file them under their client; events
    # recorded before it was added lack it, and the default lets them replay.
    @event("ClientSecretRotated")
    def _rotate_secret(self, *, secret_hash: str, secret_hint: str, secret_expires_at: datetime,
                       previous_secret_expires_at: datetime, project_id: UUID, actor: str,
                       client_id: str | None = None) -> None:
        self.previous_secret_hash = self.secret_hash
        self.previous_secret_expired = self.secret_expired
        self.secret_expired = False
        self.previous_secret_expires_at = min(previous_secret_expires_at, self.secret_expires_at)
        self.secret_hash = secret_hash
        self.secret_hint = secret_hint
        self.secret_expires_at = secret_expires_at

    def expirable_secrets(self, now: datetime) -> list[str]:
        """Which of the client's secrets are past their expiry but not yet recorded as expired.

        ``current`` is the secret in use, ``previous`` the one replaced by a rotation (after its grace period).
        A revoked client's secrets are dead already: nothing to record.
        """
        if self.revoked:
            return []
        due = []
        if now >= self.secret_expires_at and not self.secret_expired:
            due.append("current")
        previous_at = self.previous_secret_expires_at
        if previous_at is not None and now >= previous_at and not self.previous_secret_expired:
            due.append("previous")
        return due

    def expire_secrets(self, *, now: datetime, actor: str) -> None:
        """Records ``ClientSecretExpired`` for each secret past its expiry (refusal never waits for this)."""
        due = self.expirable_secrets(now)
        if not due:
            raise InvariantViolated("no secret of this client is due to expire")
        for which in due:
            expires_at = self.secret_expires_at if which == "current" else self.previous_secret_expires_at
            self._expire_secret(project_id=self.project_id, client_id=self.client_id, which=which,
                                secret_hint=self.secret_hint if which == "current" else None,
                                expires_at=expires_at, expired_at=now, actor=actor)

    @event("ClientSecretExpired")
    def _expire_secret(self, *, project_id: UUID, client_id: str, which: str, secret_hint: str | None,
                       expires_at: datetime, expired_at: datetime, actor: str) -> None:
        if which == "current":
            self.secret_expired = True
        else:
            self.previous_secret_expired = True

    def revoke(self, *, actor: str) -> None:
        """Revokes the client: no secret of it works any more."""
        self.check_not_revoked()
        self._revoke(project_id=self.project_id, actor=actor, client_id=self.client_id)

    @event("ClientRevoked")
    def _revoke(self, *, project_id: UUID, actor: str, client_id: str | None = None) -> None:
        self.revoked = True

    def check_not_revoked(self) -> None:
        """Raises if the client is revoked."""
        if self.revoked:
            raise InvariantViolated("the client is revoked")


@dataclass(frozen=True, slots=True)
class PublicClient:
    """The platform's first-party public client (no secret) used by the dashboard."""

    client_id: str
    grant_types: frozenset[GrantType]
    scope: str

    def allows_grant(self, grant_type: str) -> bool:
        """Whether this client may use ``grant_type``."""
        return grant_type in self.grant_types

    @property
    def scopes(self) -> frozenset[str]:
        """The scopes a dashboard token may carry."""
        return frozenset(self.scope.split())


DASHBOARD = PublicClient(client_id=DASHBOARD_CLIENT_ID, grant_types=DASHBOARD_GRANTS,
                         scope=" ".join(sorted(ALL_SCOPES)))

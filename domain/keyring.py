"""The platform's signing-key ring: one stream, so two processes cannot both install a first key."""

from datetime import datetime
from uuid import UUID

from eventsourcing.domain import event

from domain.entity import Entity
from domain.errors import InvariantViolated, NotFound
from domain.ids import keyring_id


class KeyRing(Entity):
    """Signing keys (public JWK and the private key encrypted with the server key) and which one signs."""

    @staticmethod
    def create_id() -> UUID:
        """There is exactly one key ring."""
        return keyring_id()

    @event("KeyRingCreated")
    def __init__(self, *, actor: str) -> None:
        self.keys: dict[str, dict[str, object]] = {}
        self.active_kid: str | None = None

    def add_key(self, *, kid: str, alg: str, public_jwk: dict[str, str], encrypted_private_key: str,
                created_at: datetime, actor: str) -> None:
        """Publishes a new key (not yet signing)."""
        if kid in self.keys:
            raise InvariantViolated("a key with this kid exists")
        self._add_key(kid=kid, alg=alg, public_jwk=public_jwk, encrypted_private_key=encrypted_private_key,
                      created_at=created_at, project_id=None, actor=actor)

    @event("SigningKeyCreated")
    def _add_key(self, *, kid: str, alg: str, public_jwk: dict[str, str], encrypted_private_key: str,
                 created_at: datetime, project_id: None, actor: str) -> None:
        self.keys[kid] = {"alg": alg, "public_jwk": public_jwk, "encrypted_private_key": encrypted_private_key,
                          "created_at": created_at, "retired": False, "revoked": False, "deactivated_at": None,
                          "retire_after": None}

    def activate(self, *, kid: str, actor: str) -> None:
        """Makes ``kid`` the key that signs new tokens."""
        if kid not in self.keys or self.keys[kid]["retired"] or self.keys[kid].get("revoked"):
            raise NotFound("no such live key")
        self._activate(kid=kid, project_id=None, actor=actor)

    @event("SigningKeyActivated")
    def _activate(self, *, kid: str, project_id: None, actor: str) -> None:
        self.active_kid = kid

    def retire(self, *, kid: str, actor: str) -> None:
        """Removes ``kid`` from the published set; tokens it signed are refused from then on."""
        if kid not in self.keys or kid == self.active_kid:
            raise InvariantViolated("only a published, inactive key can be retired")
        self._retire(kid=kid, project_id=None, actor=actor)

    @event("SigningKeyRetired")
    def _retire(self, *, kid: str, project_id: None, actor: str) -> None:
        self.keys[kid]["retired"] = True

    def rotate_to(self, *, kid: str, now: datetime, retire_after: datetime, actor: str) -> None:
        """Activates the pre-published ``kid``; the key it replaces stops signing but stays published until
        ``retire_after`` (when every token it signed has expired)."""
        previous = self.active_kid
        if previous == kid:
            raise InvariantViolated("the key is already active")
        self.activate(kid=kid, actor=actor)
        if previous is not None:
            self._deactivate(kid=previous, successor_kid=kid, deactivated_at=now, retire_after=retire_after,
                             project_id=None, actor=actor)

    @event("SigningKeyDeactivated")
    def _deactivate(self, *, kid: str, successor_kid: str, deactivated_at: datetime, retire_after: datetime,
                    project_id: None, actor: str) -> None:
        self.keys[kid]["deactivated_at"] = deactivated_at
        self.keys[kid]["retire_after"] = retire_after
        if successor_kid in self.keys:
            self.keys[successor_kid]["activated_at"] = deactivated_at  # when the successor took over signing

    def revoke(self, *, kid: str, successor_kid: str, now: datetime, reason: str, actor: str) -> None:
        """Withdraws a compromised key at once: dropped from the JWKS, every token it signed refused."""
        key = self.keys.get(kid)
        if key is None or kid == self.active_kid or key["retired"] or key.get("revoked"):
            raise InvariantViolated("only a published, inactive key can be revoked")
        self._revoke(kid=kid, successor_kid=successor_kid, revoked_at=now, reason=reason, project_id=None,
                     actor=actor)

    @event("SigningKeyRevoked")
    def _revoke(self, *, kid: str, successor_kid: str, revoked_at: datetime, reason: str, project_id: None,
                actor: str) -> None:
        self.keys[kid]["revoked"] = True

    def published(self) -> dict[str, dict[str, object]]:
        """Keys that verify tokens: every key neither retired nor revoked (pending keys included)."""
        return {kid: key for kid, key in self.keys.items() if not key["retired"] and not key.get("revoked")}

    def pending(self) -> list[str]:
        """Published keys added after the active one (the ring keeps creation order) and never active:
        pre-published successors, oldest first."""
        order = list(self.keys)
        start = order.index(self.active_kid) + 1 if self.active_kid in self.keys else 0
        published = self.published()
        return [kid for kid in order[start:] if kid in published and self.keys[kid].get("deactivated_at") is None]

    def retirable(self, now: datetime) -> list[str]:
        """Inactive published keys no longer needed: deactivated keys whose tokens have all expired, and stale
        pre-published keys that a later activation overtook (they never signed anything)."""
        waiting = set(self.pending())
        due = []
        for kid, key in self.published().items():
            if kid == self.active_kid or kid in waiting:
                continue
            retire_after = key.get("retire_after")
            if retire_after is None or now >= retire_after:  # type: ignore[operator]
                due.append(kid)
        return sorted(due)

"""The platform's signing-key ring: one stream, so two processes cannot both install a first key."""

from datetime import datetime
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import InvariantViolated, NotFound
from domain.ids import keyring_id


class KeyRing(Aggregate):
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
                          "created_at": created_at, "retired": False}

    def activate(self, *, kid: str, actor: str) -> None:
        """Makes ``kid`` the key that signs new tokens."""
        if kid not in self.keys or self.keys[kid]["retired"]:
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

    def published(self) -> dict[str, dict[str, object]]:
        """Keys that verify tokens: every key not retired."""
        return {kid: key for kid, key in self.keys.items() if not key["retired"]}

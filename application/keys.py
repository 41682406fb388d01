"""The platform's signing keys: installing the first one, reading the ring."""

from dataclasses import dataclass

from eventsourcing.persistence import IntegrityError

from application.ports import Clock, KeyFactory
from application.store import Keyledger
from domain.ids import SYSTEM_ACTOR, keyring_id
from domain.keyring import KeyRing


@dataclass(frozen=True, slots=True)
class SigningKeys:
    """Commands on the key ring."""

    app: Keyledger
    keys: KeyFactory
    clock: Clock
    algorithm: str

    def ensure_active_key(self) -> KeyRing:
        """Returns the key ring, creating it with one active key on first start.

        Two processes starting at once both try to save version 1 of the ring; the loser's IntegrityError means
        the winner's ring exists, so it reads that one.
        """
        ring = self.app.find(keyring_id(), KeyRing)
        if ring is not None and ring.active_kid is not None:
            return ring
        fresh = ring is None
        if ring is None:
            ring = KeyRing(actor=SYSTEM_ACTOR)
        new = self.keys.generate(self.algorithm)
        ring.add_key(kid=new.kid, alg=new.alg, public_jwk=new.public_jwk,
                     encrypted_private_key=new.encrypted_private_key, created_at=self.clock.now(), actor=SYSTEM_ACTOR)
        ring.activate(kid=new.kid, actor=SYSTEM_ACTOR)
        try:
            self.app.save(ring)
        except IntegrityError:
            if not fresh:
                raise
            return self.app.load(keyring_id(), KeyRing)
        return ring

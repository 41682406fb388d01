"""Signing-key rotation: scheduled (pre-publish, activate, retire) and by hand (``keyledger keys rotate [--now]``).

The schedule keeps every resource server that caches the JWKS working: a new key is published long before it signs
(``prepublish``), so a cache fetched at any time before the activation already knows it; the replaced key stays
published until every token it signed has expired (``max_token_ttl`` after it stopped signing, plus ``retire_margin``
for a token a process signed in the second before it saw the successor, and for verifiers' clock leeway). The
emergency path activates a fresh key at once and revokes the old one: its tokens are refused from then on, and it
leaves the JWKS.

Every decision is taken on the key ring's own stream, so two workers running the same step conflict on its version
(optimistic concurrency) and the loser re-reads and finds nothing left to do.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from eventsourcing.persistence import IntegrityError

from application.ports import Clock, KeyFactory
from application.store import Keyledger
from domain.ids import SYSTEM_ACTOR, keyring_id
from domain.keyring import KeyRing

ATTEMPTS = 5
RETIRE_MARGIN = 300
"""Seconds a replaced key stays published beyond the longest token lifetime: a process re-checks which key signs
at most every second, and resource servers commonly accept tokens a minute or more past ``exp`` (clock leeway)."""


@dataclass(frozen=True, slots=True)
class RotationPolicy:
    """When keys change, in seconds.

    Attributes:
        rotation: A key signs for this long before its successor takes over.
        prepublish: A successor is published this long before it signs.
        max_token_ttl: The longest access-token lifetime: a replaced key stays published this long...
        retire_margin: ...and this much longer (see ``RETIRE_MARGIN``).
    """

    rotation: int
    prepublish: int
    max_token_ttl: int
    retire_margin: int = RETIRE_MARGIN


@dataclass(frozen=True, slots=True)
class RotationStep:
    """One change made to the ring: ``action`` is created, activated, retired or revoked."""

    action: str
    kid: str


@dataclass(frozen=True, slots=True)
class KeyRotation:
    """Commands rotating the platform's signing keys."""

    app: Keyledger
    keys: KeyFactory
    clock: Clock
    algorithm: str
    policy: RotationPolicy

    def run_schedule(self) -> list[RotationStep]:
        """Takes every step that is due now (idempotent: nothing due, nothing recorded)."""
        return self._decide(self._scheduled_steps)

    def rotate(self, *, emergency: bool, actor: str = SYSTEM_ACTOR) -> list[RotationStep]:
        """By hand: pre-publishes a successor (the schedule activates it after ``prepublish``), or, in an
        ``emergency``, activates a fresh key at once and revokes the active one (its tokens are refused)."""
        if emergency:
            return self._decide(lambda ring, now: self._emergency(ring, now, actor))
        return self._decide(lambda ring, now: self._create(ring, now, actor))

    def _decide(self, steps: Callable[[KeyRing, datetime], list[RotationStep]]) -> list[RotationStep]:
        for _ in range(ATTEMPTS):
            ring = self.app.load(keyring_id(), KeyRing)
            taken = steps(ring, self.clock.now())
            if not taken:
                return []
            try:
                self.app.save(ring)
            except IntegrityError:  # another process changed the ring meanwhile: decide again on the new version
                continue
            return taken
        raise TimeoutError("the key ring kept changing while being rotated")

    def _scheduled_steps(self, ring: KeyRing, now: datetime) -> list[RotationStep]:
        steps: list[RotationStep] = []
        pending = ring.pending()
        active = ring.keys[ring.active_kid] if ring.active_kid else None
        # The active key has signed since it took over (a successor's activation; the first key's creation), so its
        # successor, published ``prepublish`` before it signs, takes over ``rotation`` after that.
        signs_since = (active.get("activated_at") or active["created_at"]) if active else None
        if not pending and isinstance(signs_since, datetime) and \
                now >= signs_since + timedelta(seconds=self.policy.rotation - self.policy.prepublish):
            steps += self._create(ring, now, SYSTEM_ACTOR)
            pending = ring.pending()
        due = [kid for kid in pending if now >= ring.keys[kid]["created_at"] + timedelta(  # type: ignore[operator]
            seconds=self.policy.prepublish)]
        if due:
            newest = due[-1]
            keep = self.policy.max_token_ttl + self.policy.retire_margin
            ring.rotate_to(kid=newest, now=now, retire_after=now + timedelta(seconds=keep), actor=SYSTEM_ACTOR)
            steps.append(RotationStep("activated", newest))
        for kid in ring.retirable(now):
            ring.retire(kid=kid, actor=SYSTEM_ACTOR)
            steps.append(RotationStep("retired", kid))
        return steps

    def _create(self, ring: KeyRing, now: datetime, actor: str) -> list[RotationStep]:
        new = self.keys.generate(self.algorithm)
        ring.add_key(kid=new.kid, alg=new.alg, public_jwk=new.public_jwk,
                     encrypted_private_key=new.encrypted_private_key, created_at=now, actor=actor)
        return [RotationStep("created", new.kid)]

    def _emergency(self, ring: KeyRing, now: datetime, actor: str) -> list[RotationStep]:
        old = ring.active_kid
        steps = self._create(ring, now, actor)
        new = steps[0].kid
        ring.activate(kid=new, actor=actor)
        steps.append(RotationStep("activated", new))
        if old is not None:
            ring.revoke(kid=old, successor_kid=new, now=now, reason="emergency rotation", actor=actor)
            steps.append(RotationStep("revoked", old))
        return steps


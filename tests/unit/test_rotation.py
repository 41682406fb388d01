"""Signing-key rotation on the in-memory store: schedule steps, emergency rotation, the key set's version check."""

from datetime import timedelta

import pytest

from application.rotation import KeyRotation, RotationPolicy
from domain.errors import InvariantViolated
from domain.ids import keyring_id
from domain.keyring import KeyRing
from infrastructure.crypto.hashing import derive_key
from infrastructure.crypto.jwt import InvalidToken, KeySet
from infrastructure.crypto.keys import SigningKeyFactory
from tests.unit.conftest import SERVER_KEY, World, snapshot_of

DAY = 24 * 3600
POLICY = RotationPolicy(rotation=30 * DAY, prepublish=DAY, max_token_ttl=DAY)


def factory() -> SigningKeyFactory:
    return SigningKeyFactory(derive_key(SERVER_KEY, "keyledger signing key encryption v1"))


def rotation(world: World) -> KeyRotation:
    return KeyRotation(app=world.app, keys=factory(), clock=world.clock, algorithm="ES256", policy=POLICY)


def ring(world: World) -> KeyRing:
    return world.app.load(keyring_id(), KeyRing)


def actions(steps: list) -> list[str]:
    return [s.action for s in steps]


def test_the_schedule_prepublishes_activates_and_retires(world: World) -> None:
    rotator, first = rotation(world), ring(world).active_kid
    assert rotator.run_schedule() == []
    world.clock.advance(days=28)
    assert rotator.run_schedule() == []
    world.clock.advance(days=1)
    created = rotator.run_schedule()
    assert actions(created) == ["created"]
    new = created[0].kid
    assert ring(world).active_kid == first and set(ring(world).published()) == {first, new}  # published, not signing
    assert rotator.run_schedule() == []
    world.clock.advance(days=1)
    assert [(s.action, s.kid) for s in rotator.run_schedule()] == [("activated", new)]
    assert ring(world).active_kid == new and first in ring(world).published()  # the old key still verifies
    world.clock.advance(hours=24)  # the longest token lifetime has passed...
    assert rotator.run_schedule() == []  # ...but a token signed in the second after activation may still verify
    world.clock.advance(seconds=POLICY.retire_margin - 1)
    assert rotator.run_schedule() == []
    world.clock.advance(seconds=1)
    assert [(s.action, s.kid) for s in rotator.run_schedule()] == [("retired", first)]
    assert set(ring(world).published()) == {new}
    world.clock.advance(days=29)
    assert actions(rotator.run_schedule()) == ["created"]  # the next period starts from the new key


def test_each_key_signs_for_the_whole_rotation_period(world: World) -> None:
    """A successor's period counts from when it took over signing, not from when it was pre-published: counted from
    its creation, every key after the first signed for ``rotation - prepublish`` (29 days of 30)."""
    rotator = rotation(world)
    world.clock.advance(days=29)
    new = rotator.run_schedule()[0].kid
    world.clock.advance(days=1)
    assert actions(rotator.run_schedule()) == ["activated"]
    world.clock.advance(days=28, hours=1)  # 29 days and an hour after the new key's creation
    assert "created" not in actions(rotator.run_schedule())
    world.clock.advance(hours=23)  # 29 days after it took over: its successor is published...
    assert actions(rotator.run_schedule()) == ["created"]
    world.clock.advance(days=1)  # ...and signs 30 days after it took over
    assert actions(rotator.run_schedule()) == ["activated"]
    assert ring(world).active_kid != new
    assert ring(world).keys[new]["deactivated_at"] - ring(world).keys[new]["activated_at"] == timedelta(days=30)


def test_rotation_events_carry_kid_successor_and_times(world: World) -> None:
    rotator, first = rotation(world), ring(world).active_kid
    new = rotator.rotate(emergency=False)[0].kid
    world.clock.advance(days=1)
    rotator.run_schedule()
    names = [n.topic.rsplit(".", 1)[-1] for n in world.app.recorder.select_notifications(start=1, limit=10 ** 6)
             if "keyring" in n.topic]
    assert names[-3:] == ["SigningKeyCreated", "SigningKeyActivated", "SigningKeyDeactivated"]
    last = [world.app.mapper.to_domain_event(n) for n in world.app.recorder.select_notifications(start=1, limit=10 ** 6)
            if n.topic.endswith("SigningKeyDeactivated")][-1]
    assert (last.kid, last.successor_kid, last.deactivated_at, last.retire_after) == (
        first, new, world.clock.now(), world.clock.now() + timedelta(days=1, seconds=POLICY.retire_margin))


def test_emergency_rotation_activates_at_once_and_revokes_the_old_key(world: World) -> None:
    first = ring(world).active_kid
    steps = rotation(world).rotate(emergency=True, actor="operator")
    assert actions(steps) == ["created", "activated", "revoked"]
    assert steps[2].kid == first and ring(world).active_kid == steps[0].kid
    assert first not in ring(world).published()
    world.keys.reload()
    assert first not in {k["kid"] for k in world.keys.jwks()["keys"]}
    assert world.keys.find(first) is None


def test_a_stale_prepublished_key_is_retired_after_an_emergency(world: World) -> None:
    rotator = rotation(world)
    pending = rotator.rotate(emergency=False)[0].kid
    emergency = rotator.rotate(emergency=True)[0].kid
    world.clock.advance(days=2)
    steps = rotator.run_schedule()
    assert ("retired", pending) in [(s.action, s.kid) for s in steps]
    assert ring(world).active_kid == emergency  # the stale key never takes over


def test_the_active_key_cannot_be_revoked_or_retired(world: World) -> None:
    current = ring(world)
    assert current.active_kid is not None
    with pytest.raises(InvariantViolated):
        current.revoke(kid=current.active_kid, successor_kid="x", now=world.clock.now(), reason="r", actor="system")
    with pytest.raises(InvariantViolated):
        current.retire(kid=current.active_kid, actor="system")


def test_a_key_set_with_a_version_check_drops_a_revoked_key_at_the_next_validation(world: World) -> None:
    keys = KeySet(lambda: _snapshot(world), version=lambda: ring(world).version, sign_check_interval=3600)
    first = keys.snapshot.active_kid
    assert keys.find(first) is not None
    rotation(world).rotate(emergency=True)
    assert keys.for_signing().active_kid == first  # signing re-checks only every sign_check_interval
    assert keys.find(first) is None  # no interval to wait: validation checks the ring's version
    assert keys.for_signing().active_kid == ring(world).active_kid != first


def _snapshot(world: World):  # type: ignore[no-untyped-def]
    snap = snapshot_of(ring(world), factory())
    return type(snap)(published=snap.published, active_kid=snap.active_kid,
                      active_private_key=snap.active_private_key, version=ring(world).version)


def test_tokens_of_a_revoked_key_are_refused_by_a_version_checking_validator(world: World) -> None:
    from infrastructure.crypto.jwt import JwtSigner, JwtValidator  # noqa: PLC0415

    keys = KeySet(lambda: _snapshot(world), version=lambda: ring(world).version, sign_check_interval=0)
    claims = {"iss": "i", "aud": "a", "sub": "s", "exp": 2 ** 31, "iat": 1, "jti": "j", "client_id": "c"}
    token = JwtSigner(keys).sign(claims)
    validator = JwtValidator(keys, "i", "a")
    assert validator.validate(token)["sub"] == "s"
    rotation(world).rotate(emergency=True)
    with pytest.raises(InvalidToken):
        validator.validate(token)
    assert validator.validate(JwtSigner(keys).sign(claims))["sub"] == "s"  # the new key signs and verifies

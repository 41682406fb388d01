"""KeyRing rules, User life, and the EmailIndex's deterministic id."""

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from eventsourcing.persistence import IntegrityError

from domain.errors import InvariantViolated, NotFound
from domain.ids import email_index_id, keyring_id, normalize_email
from domain.keyring import KeyRing
from domain.user import EmailIndex, User
from tests.unit.conftest import T0, in_memory_app


def ring_with(*kids: str) -> KeyRing:
    ring = KeyRing(actor="system")
    for kid in kids:
        ring.add_key(kid=kid, alg="ES256", public_jwk={"kty": "EC", "kid": kid}, encrypted_private_key="sealed",
                     created_at=T0, actor="system")
    return ring


def test_there_is_one_ring_with_a_fixed_id() -> None:
    assert KeyRing(actor="system").id == KeyRing.create_id() == keyring_id()


def test_a_new_key_is_published_but_not_active() -> None:
    ring = ring_with("k1")
    assert ring.active_kid is None
    assert set(ring.published()) == {"k1"}


def test_a_kid_cannot_be_added_twice() -> None:
    ring = ring_with("k1")
    with pytest.raises(InvariantViolated):
        ring.add_key(kid="k1", alg="EdDSA", public_jwk={}, encrypted_private_key="other", created_at=T0,
                     actor="system")
    assert ring.keys["k1"]["alg"] == "ES256"


def test_activate_switches_the_signing_key() -> None:
    ring = ring_with("k1", "k2")
    ring.activate(kid="k1", actor="system")
    ring.activate(kid="k2", actor="system")
    assert ring.active_kid == "k2"


def test_an_unknown_or_retired_key_cannot_be_activated() -> None:
    ring = ring_with("k1", "k2")
    ring.activate(kid="k1", actor="system")
    ring.retire(kid="k2", actor="system")
    with pytest.raises(NotFound):
        ring.activate(kid="k2", actor="system")
    with pytest.raises(NotFound):
        ring.activate(kid="nope", actor="system")
    assert ring.active_kid == "k1"


def test_the_active_or_an_unknown_key_cannot_be_retired() -> None:
    ring = ring_with("k1")
    ring.activate(kid="k1", actor="system")
    with pytest.raises(InvariantViolated):
        ring.retire(kid="k1", actor="system")
    with pytest.raises(InvariantViolated):
        ring.retire(kid="nope", actor="system")
    assert set(ring.published()) == {"k1"}


def test_a_retired_key_is_no_longer_published() -> None:
    ring = ring_with("k1", "k2")
    ring.activate(kid="k1", actor="system")
    ring.activate(kid="k2", actor="system")
    ring.retire(kid="k1", actor="system")
    assert set(ring.published()) == {"k2"}
    assert "k1" in ring.keys


def test_keyring_events_are_named_and_carry_the_actor() -> None:
    ring = ring_with("k1", "k2")
    ring.activate(kid="k1", actor="system")
    ring.retire(kid="k2", actor="cli")
    events = ring.collect_events()
    assert [type(e).__name__ for e in events] == ["KeyRingCreated", "SigningKeyCreated", "SigningKeyCreated",
                                                  "SigningKeyActivated", "SigningKeyRetired"]
    assert [e.actor for e in events] == ["system"] * 4 + ["cli"]  # type: ignore[attr-defined]


def test_user_email_is_normalized_and_password_can_change() -> None:
    user_id = uuid4()
    user = User(user_id=user_id, email="  Ada@Example.COM ", password_hash="$argon2id$a", actor=f"user:{user_id}")
    assert user.id == user_id
    assert user.email == "ada@example.com"
    changed_at = datetime(2026, 12, 7, 12, tzinfo=UTC)
    assert not user.predates_password_change(issued_at=changed_at - timedelta(days=1), account_version=1)  # never
    user.change_password(password_hash="$argon2id$b", changed_at=changed_at, actor=f"user:{user_id}")
    assert user.password_hash == "$argon2id$b"
    assert user.password_changed_version == user.version == 2
    # A token decided on the account's stream before the change predates it, whenever it was issued; one decided on
    # the change or later does not; one recorded without the version is judged by its issuance time.
    assert user.predates_password_change(issued_at=changed_at + timedelta(seconds=1), account_version=1)
    assert not user.predates_password_change(issued_at=changed_at - timedelta(seconds=1), account_version=2)
    assert user.predates_password_change(issued_at=changed_at - timedelta(microseconds=1), account_version=None)
    assert not user.predates_password_change(issued_at=changed_at, account_version=None)
    assert [type(e).__name__ for e in user.collect_events()] == ["UserRegistered", "PasswordChanged"]


def test_a_user_can_be_disabled_once() -> None:
    user = User(user_id=uuid4(), email="a@x.io", password_hash="h", actor="system")
    assert not user.disabled
    user.disable(actor="system")
    assert user.disabled
    with pytest.raises(InvariantViolated):
        user.disable(actor="system")
    assert [type(e).__name__ for e in user.collect_events()] == ["UserRegistered", "UserDisabled"]


def test_email_index_id_follows_the_normalized_email() -> None:
    assert normalize_email("  A@X.io ") == "a@x.io"
    assert EmailIndex.create_id("A@X.io") == EmailIndex.create_id("a@x.io ") == email_index_id("a@x.io")
    assert EmailIndex.create_id("a@x.io") != EmailIndex.create_id("b@x.io")
    index = EmailIndex(email="A@X.io", user_id=uuid4(), actor="system")
    assert index.id == email_index_id("a@x.io")


def test_the_store_refuses_a_second_reservation_of_the_same_email() -> None:
    app = in_memory_app()
    first = EmailIndex(email="A@X.io", user_id=uuid4(), actor="system")
    app.save(first)
    with pytest.raises(IntegrityError):
        app.save(EmailIndex(email="a@x.io ", user_id=uuid4(), actor="system"))
    assert app.load(first.id, EmailIndex).user_id == first.user_id

"""Keyed hashes of opaque secrets, per-purpose key derivation, and argon2id passwords."""

import hashlib
import hmac
import re

from infrastructure.crypto.hashing import Argon2PasswordHasher, HmacSecretHasher, derive_key
from tests.unit.conftest import fast_passwords

KEY_A = b"a" * 32
KEY_B = b"b" * 32


def test_hmac_hash_is_deterministic_per_key() -> None:
    hasher = HmacSecretHasher(KEY_A)
    first = hasher.hash("klcs_secret")
    assert first == HmacSecretHasher(KEY_A).hash("klcs_secret")
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    assert "klcs_secret" not in first


def test_hmac_hash_differs_across_keys_and_secrets() -> None:
    assert HmacSecretHasher(KEY_A).hash("s") != HmacSecretHasher(KEY_B).hash("s")
    assert HmacSecretHasher(KEY_A).hash("s1") != HmacSecretHasher(KEY_A).hash("s2")


def test_hmac_is_hmac_sha256_of_the_utf8_secret_not_a_plain_digest() -> None:
    # Pinned: stored hashes must keep matching the secrets already handed out.
    assert HmacSecretHasher(KEY_A).hash("sé") == hmac.new(KEY_A, "sé".encode(), hashlib.sha256).hexdigest()
    assert HmacSecretHasher(KEY_A).hash("s") != hashlib.sha256(b"s").hexdigest()


def test_derive_key_gives_independent_keys_per_purpose() -> None:
    hashing = derive_key(KEY_A, "keyledger secret hash v1")
    sealing = derive_key(KEY_A, "keyledger signing key encryption v1")
    assert len(hashing) == len(sealing) == 32
    assert hashing != sealing
    assert hashing != KEY_A
    assert derive_key(KEY_A, "keyledger secret hash v1") == hashing
    assert derive_key(KEY_B, "keyledger secret hash v1") != hashing


def test_argon2_verifies_the_right_password_only() -> None:
    hasher = fast_passwords()
    encoded = hasher.hash("hunter2-hunter2")
    assert encoded.startswith("$argon2id$")
    assert "hunter2" not in encoded
    assert hasher.verify(encoded, "hunter2-hunter2")
    assert not hasher.verify(encoded, "hunter2-hunter3")
    assert not hasher.verify(encoded, "")


def test_argon2_hashes_are_salted() -> None:
    hasher = fast_passwords()
    first, second = hasher.hash("same password"), hasher.hash("same password")
    assert first != second
    assert hasher.verify(first, "same password") and hasher.verify(second, "same password")


def test_argon2_without_a_hash_fails_even_for_the_dummy_password() -> None:
    hasher = fast_passwords()
    assert not hasher.verify(None, "anything")
    assert not hasher.verify(None, "keyledger-dummy-password")


def test_argon2_with_an_empty_hash_fails_even_for_the_dummy_password() -> None:
    # An empty stored hash must not fall back to the dummy hash, whose password is in the source code.
    assert not fast_passwords().verify("", "keyledger-dummy-password")


def test_argon2_refuses_a_malformed_hash() -> None:
    hasher = fast_passwords()
    assert not hasher.verify("not-a-hash", "pw")
    assert not hasher.verify("$argon2id$v=19$m=8,t=1,p=1$garbage", "pw")


def test_default_hasher_is_argon2id_with_owasp_parameters() -> None:
    hasher = Argon2PasswordHasher()
    encoded = hasher.hash("a real password")
    assert encoded.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert hasher.verify(encoded, "a real password")
    assert not hasher.verify(encoded, "a real passwore")
    # A hash made with other parameters still verifies (argon2 reads them from the encoded hash).
    assert hasher.verify(fast_passwords().hash("pw"), "pw")

"""Signing-key generation: public JWKs, RFC 7638 thumbprint kids, AES-GCM sealing bound to the kid."""

import base64
import hashlib
import json

import pytest
from cryptography.exceptions import InvalidTag
from joserfc.jwk import ECKey, OKPKey, RSAKey

from application.ports import NewSigningKey
from infrastructure.crypto.keys import SigningKeyFactory, public_jwk, thumbprint

SEALING_KEY = bytes(range(32))
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
JOSERFC = {"EC": ECKey, "OKP": OKPKey, "RSA": RSAKey}
EXPECTED_CURVE = {"ES256": ("EC", "P-256"), "EdDSA": ("OKP", "Ed25519"), "RS256": ("RSA", None)}
# RFC 7638 section 3.1's example key and its thumbprint.
RFC7638_JWK = {
    "kty": "RSA", "e": "AQAB", "alg": "RS256", "kid": "2011-04-29",
    "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3o"
         "knjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu"
         "6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8aw"
         "apJzKnqDKgw",
}


@pytest.fixture(scope="module")
def factory() -> SigningKeyFactory:
    return SigningKeyFactory(SEALING_KEY)


@pytest.fixture(scope="module")
def generated(factory: SigningKeyFactory) -> dict[str, NewSigningKey]:
    return {alg: factory.generate(alg) for alg in ("ES256", "EdDSA", "RS256")}


def unb64(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def test_thumbprint_matches_rfc7638_example() -> None:
    assert thumbprint(RFC7638_JWK) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "RS256"])
def test_generated_jwk_is_public_and_its_kid_is_the_thumbprint(alg: str, generated: dict[str, NewSigningKey]) -> None:
    key = generated[alg]
    jwk = key.public_jwk
    assert not PRIVATE_MEMBERS & set(jwk)
    assert key.alg == jwk["alg"] == alg
    assert jwk["use"] == "sig"
    kty, crv = EXPECTED_CURVE[alg]
    assert jwk["kty"] == kty
    assert jwk.get("crv") == crv
    assert key.kid == jwk["kid"] == thumbprint(jwk)
    assert JOSERFC[kty].import_key(dict(jwk)).thumbprint() == key.kid


def test_ec_kid_matches_an_independently_computed_thumbprint(generated: dict[str, NewSigningKey]) -> None:
    jwk = generated["ES256"].public_jwk
    canonical = f'{{"crv":"P-256","kty":"EC","x":"{jwk["x"]}","y":"{jwk["y"]}"}}'.encode()
    expected = base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()
    assert generated["ES256"].kid == expected


@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "RS256"])
def test_decrypt_round_trips_to_the_published_keys_private_half(
    alg: str, factory: SigningKeyFactory, generated: dict[str, NewSigningKey]
) -> None:
    key = generated[alg]
    private = factory.decrypt(key.kid, key.encrypted_private_key)
    public = public_jwk(private.public_key())
    assert thumbprint(public) == key.kid
    assert {k: v for k, v in public.items() if k != "key_ops"} == {
        k: v for k, v in key.public_jwk.items() if k not in {"kid", "alg", "use", "key_ops"}
    }


def test_the_private_key_is_not_stored_in_clear(generated: dict[str, NewSigningKey]) -> None:
    for key in generated.values():
        sealed = unb64(key.encrypted_private_key)
        assert b"PRIVATE KEY" not in sealed
        assert b"BEGIN" not in sealed
        assert "PRIVATE" not in json.dumps(key.public_jwk)


def test_decrypt_with_another_encryption_key_fails(generated: dict[str, NewSigningKey]) -> None:
    key = generated["ES256"]
    with pytest.raises(InvalidTag):
        SigningKeyFactory(bytes(reversed(SEALING_KEY))).decrypt(key.kid, key.encrypted_private_key)


def test_a_ciphertext_moved_to_another_kid_fails(factory: SigningKeyFactory,
                                                 generated: dict[str, NewSigningKey]) -> None:
    es, ed = generated["ES256"], generated["EdDSA"]
    with pytest.raises(InvalidTag):
        factory.decrypt(ed.kid, es.encrypted_private_key)


def test_a_tampered_ciphertext_fails(factory: SigningKeyFactory, generated: dict[str, NewSigningKey]) -> None:
    key = generated["EdDSA"]
    sealed = bytearray(unb64(key.encrypted_private_key))
    sealed[20] ^= 0x01
    tampered = base64.urlsafe_b64encode(bytes(sealed)).rstrip(b"=").decode()
    with pytest.raises(InvalidTag):
        factory.decrypt(key.kid, tampered)


def test_each_generation_is_a_new_key_with_a_fresh_nonce(factory: SigningKeyFactory) -> None:
    first, second = factory.generate("ES256"), factory.generate("ES256")
    assert first.kid != second.kid
    assert unb64(first.encrypted_private_key)[:12] != unb64(second.encrypted_private_key)[:12]


@pytest.mark.parametrize("alg", ["HS256", "none", "ES384", "es256"])
def test_only_allowed_algorithms_are_generated(alg: str, factory: SigningKeyFactory) -> None:
    with pytest.raises(ValueError, match="unsupported"):
        factory.generate(alg)

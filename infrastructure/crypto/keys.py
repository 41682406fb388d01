"""Signing-key material: generation, RFC 7638 thumbprint kids, and AES-GCM encryption at rest.

The private key is stored in the event store only encrypted under a key derived from ``KEYLEDGER_SECRET_KEY``;
the kid is bound to the ciphertext as associated data so a ciphertext cannot be swapped between keys.
"""

import base64
import hashlib
import json
import os
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from application.ports import NewSigningKey

ALLOWED_ALGORITHMS: frozenset[str] = frozenset({"ES256", "EdDSA", "RS256"})
_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x"), "RSA": ("e", "kty", "n")}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def _generate_private_key(alg: str) -> Any:
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    raise ValueError(f"unsupported signing algorithm {alg!r}; allowed: {sorted(ALLOWED_ALGORITHMS)}")


def public_jwk(public_key: Any) -> dict[str, str]:
    """Returns the RFC 7517 JWK of a public key (no private members)."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return ECAlgorithm.to_jwk(public_key, as_dict=True)
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return OKPAlgorithm.to_jwk(public_key, as_dict=True)
    return RSAAlgorithm.to_jwk(public_key, as_dict=True)


def thumbprint(jwk: dict[str, str]) -> str:
    """Returns the RFC 7638 SHA-256 thumbprint of a JWK, used as its kid."""
    members = {k: jwk[k] for k in _THUMBPRINT_MEMBERS[jwk["kty"]]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return _b64(hashlib.sha256(canonical).digest())


class SigningKeyFactory:
    """Generates signing keys and encrypts/decrypts their private parts with the at-rest key."""

    def __init__(self, encryption_key: bytes) -> None:
        self._aead = AESGCM(encryption_key)

    def generate(self, alg: str) -> NewSigningKey:
        """Returns a new key for ``alg`` with its private key encrypted."""
        private_key = _generate_private_key(alg)
        jwk = public_jwk(private_key.public_key())
        kid = thumbprint(jwk)
        jwk = {**jwk, "kid": kid, "alg": alg, "use": "sig"}
        pem = private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
        nonce = os.urandom(12)
        sealed = nonce + self._aead.encrypt(nonce, pem, kid.encode())
        return NewSigningKey(kid=kid, alg=alg, public_jwk=jwk, encrypted_private_key=_b64(sealed))

    def decrypt(self, kid: str, encrypted_private_key: str) -> Any:
        """Returns the private key object of ``kid`` (raises if the server key is wrong)."""
        sealed = _unb64(encrypted_private_key)
        pem = self._aead.decrypt(sealed[:12], sealed[12:], kid.encode())
        return serialization.load_pem_private_key(pem, password=None)

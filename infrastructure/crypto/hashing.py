"""Keyed hashes for opaque secrets and argon2id for passwords.

Secrets are high-entropy, so one HMAC-SHA256 under a server key kept outside the database is enough: a stolen
database alone cannot confirm a guess. Passwords are low-entropy and get argon2id (RFC 9106).
"""

import contextlib
import hashlib
import hmac

from argon2 import PasswordHasher as _Argon2
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def derive_key(server_key: bytes, purpose: str) -> bytes:
    """Derives an independent 32-byte key per purpose from the server key (HKDF-SHA256, RFC 5869)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(server_key)


class HmacSecretHasher:
    """HMAC-SHA256 keyed hash of opaque secrets (client secrets, refresh tokens)."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def hash(self, secret: str) -> str:
        """Returns the hex keyed hash of ``secret``."""
        return hmac.new(self._key, secret.encode(), hashlib.sha256).hexdigest()


class Argon2PasswordHasher:
    """argon2id with the RFC 9106 second recommended profile scaled to OWASP's minimum (19 MiB, t=2, p=1)."""

    def __init__(self, time_cost: int = 2, memory_cost: int = 19 * 1024, parallelism: int = 1) -> None:
        self._hasher = _Argon2(time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism)
        # A real hash to verify against when the account does not exist, so timing does not reveal which emails exist.
        self._dummy = self._hasher.hash("keyledger-dummy-password")

    def hash(self, password: str) -> str:
        """Returns an encoded argon2id hash of ``password``."""
        return self._hasher.hash(password)

    def verify(self, password_hash: str | None, password: str) -> bool:
        """Verifies ``password`` in constant time; a None hash still spends the same work and fails."""
        if not password_hash:
            # Spend the same work, then fail whatever the password.
            with contextlib.suppress(VerificationError, InvalidHashError):
                self._hasher.verify(self._dummy, password)
            return False
        try:
            return bool(self._hasher.verify(password_hash, password))
        except (VerificationError, InvalidHashError):
            return False

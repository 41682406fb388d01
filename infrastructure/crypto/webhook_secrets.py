"""Webhook signing secrets (Standard Webhooks): generation, AES-GCM encryption at rest, and signatures.

A secret is ``whsec_`` + base64 of 24 random bytes; the HMAC key is those bytes. The server must sign every later
delivery, so (unlike client secrets, kept only as keyed hashes) the secret is stored, but only encrypted under a key
derived from ``KEYLEDGER_SECRET_KEY``, with the webhook id as associated data so a ciphertext cannot be moved to
another webhook.
"""

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass
from uuid import UUID

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SECRET_PREFIX = "whsec_"  # noqa: S105 - a format prefix, not a secret
_SECRET_BYTES = 24


@dataclass(frozen=True, slots=True)
class NewWebhookSecret:
    """A fresh secret: shown once to the caller, recorded only as ``encrypted`` and ``hint``."""

    secret: str
    encrypted: str
    hint: str


def secret_key_bytes(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret (the decoded base64 part)."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value: ``v1,`` + base64 HMAC-SHA256 of ``{id}.{timestamp}.{body}``."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(secret: str, message_id: str, timestamp: int, body: bytes, header: str) -> bool:
    """Whether one of the space-separated signatures of ``header`` is valid (what a receiver does)."""
    expected = sign(secret, message_id, timestamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in header.split())


class WebhookSecrets:
    """Makes webhook secrets and opens their ciphertexts with the at-rest key."""

    def __init__(self, encryption_key: bytes) -> None:
        self._aead = AESGCM(encryption_key)

    def new(self, webhook_id: UUID) -> NewWebhookSecret:
        """A new secret for ``webhook_id``, with its ciphertext and a hint (prefix and last four characters)."""
        secret = SECRET_PREFIX + base64.b64encode(os.urandom(_SECRET_BYTES)).decode()
        nonce = os.urandom(12)
        sealed = nonce + self._aead.encrypt(nonce, secret.encode(), webhook_id.bytes)
        return NewWebhookSecret(secret=secret, encrypted=base64.urlsafe_b64encode(sealed).decode(),
                                hint=f"{SECRET_PREFIX}...{secret[-4:]}")

    def open(self, webhook_id: UUID, encrypted: str) -> str:
        """The secret of ``webhook_id`` (raises ``cryptography.exceptions.InvalidTag`` on a wrong key or id)."""
        sealed = base64.urlsafe_b64decode(encrypted)
        return self._aead.decrypt(sealed[:12], sealed[12:], webhook_id.bytes).decode()

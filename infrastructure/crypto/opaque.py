"""Opaque credentials in the style of GitHub's token format.

``<prefix>_<32 base62 chars of randomness><6 base62 chars of CRC32 checksum>``: the prefix lets secret scanners and
people recognise what leaked; the checksum lets the server reject a mistyped or forged string without touching the
database. Randomness: 32 base62 characters, about 190 bits.
"""

import secrets
import zlib
from enum import StrEnum

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
BODY_LENGTH = 32
CHECKSUM_LENGTH = 6
CLIENT_ID_PREFIX = "klc_"
CLIENT_ID_BODY = 22


class CredentialType(StrEnum):
    """Prefixes of keyledger's opaque credentials."""

    CLIENT_SECRET = "klcs"  # noqa: S105 - a prefix, not a secret
    REFRESH_TOKEN = "klrt"  # noqa: S105 - a prefix, not a secret


def _base62(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, rem = divmod(number, 62)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))


def _random_base62(width: int) -> str:
    """``width`` uniformly random base62 characters: one number below 62**width from the OS's randomness (about
    1.4 reads of it on average, the rejected draws of ``randbelow``), where a read per character, as
    ``secrets.choice`` makes, cost each refresh and login about 50 µs more."""
    return _base62(secrets.randbelow(62**width), width)


def _checksum(prefix: str, body: str) -> str:
    return _base62(zlib.crc32(f"{prefix}_{body}".encode()), CHECKSUM_LENGTH)


def mint(kind: CredentialType) -> str:
    """Returns a fresh credential of ``kind``."""
    body = _random_base62(BODY_LENGTH)
    return f"{kind.value}_{body}{_checksum(kind.value, body)}"


def is_well_formed(value: str, kind: CredentialType) -> bool:
    """Whether ``value`` has the shape and checksum of a credential of ``kind`` (no database look-up)."""
    prefix = kind.value + "_"
    if len(value) != len(prefix) + BODY_LENGTH + CHECKSUM_LENGTH or not value.startswith(prefix):
        return False
    rest = value[len(prefix):]
    if not (rest.isascii() and rest.isalnum()):  # base62 is exactly ASCII's letters and digits (checked in C)
        return False
    body, check = rest[:BODY_LENGTH], rest[BODY_LENGTH:]
    return secrets.compare_digest(check, _checksum(kind.value, body))


def is_client_id(value: str) -> bool:
    """Whether ``value`` has the exact shape of a client id (``new_client_id``'s prefix and 22 letters or digits):
    anything longer may be a secret with its prefix damaged (``klcs_`` with the ``s`` cut is ``klc_`` and 38)."""
    if not value.startswith(CLIENT_ID_PREFIX):
        return False
    rest = value[len(CLIENT_ID_PREFIX):]
    return len(rest) == CLIENT_ID_BODY and rest.isascii() and rest.isalnum()


def hint(value: str) -> str:
    """Returns what may be shown of a credential after creation: its prefix and last four characters."""
    return f"{value.split('_', 1)[0]}_...{value[-4:]}"


def new_client_id() -> str:
    """Returns a new public client identifier (not a secret)."""
    return CLIENT_ID_PREFIX + _random_base62(CLIENT_ID_BODY)

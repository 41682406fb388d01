"""Opaque cursors for keyset pagination: the sort key of a page's last row, base64url-encoded."""

import base64
import binascii
from datetime import datetime
from uuid import UUID

from domain.errors import InvalidArgument

DEFAULT_PAGE = 50
MAX_PAGE = 200


def encode_cursor(at: datetime, key: str) -> str:
    """Encodes the ``(timestamp, key)`` position of a page's last row."""
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{key}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Reads a cursor made by ``encode_cursor``.

    Raises:
        InvalidArgument: the cursor was not made by this server.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, key = raw.split("|")
        parsed = datetime.fromisoformat(at)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidArgument("the cursor is invalid") from None
    if parsed.tzinfo is None or not key:
        raise InvalidArgument("the cursor is invalid")
    return parsed, key


def decode_uuid_cursor(cursor: str) -> tuple[datetime, UUID]:
    """Reads a cursor whose key is a UUID (tokens, members).

    Raises:
        InvalidArgument: the cursor was not made by this server.
    """
    at, key = decode_cursor(cursor)
    try:
        return at, UUID(key)
    except ValueError:
        raise InvalidArgument("the cursor is invalid") from None

"""Opaque cursors for keyset pagination: the sort key of a page's last row and the listing it ends a page of.

A cursor names a position in one listing: one project's tokens with one set of filters, say. Sent with another
project or other filters it would start that other listing in the middle, silently skipping rows; so the cursor
carries a digest of the listing (the project and every filter), and one sent with another listing is refused (400)
instead. The digest is not a secret and need not be: every query is confined to the caller's project anyway, and a
cursor made by hand only moves where the caller's own listing starts.
"""

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from domain.errors import InvalidArgument

DEFAULT_PAGE = 50
MAX_PAGE = 200
_INVALID = "the cursor is invalid"
_OTHER_LISTING = "the cursor belongs to another listing: send it with the project and filters of the page that gave it"


def listing_digest(listing: Sequence[object]) -> str:
    """A short digest of what a listing is: its project and filters, in a fixed order (None for a filter not
    given)."""
    text = "\x1f".join("" if part is None else str(part) for part in listing)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def encode_cursor(at: datetime, key: str, *, listing: Sequence[object]) -> str:
    """Encodes the ``(timestamp, key)`` position of a page's last row in ``listing`` (``listing_digest``)."""
    raw = f"{at.isoformat()}|{key}|{listing_digest(listing)}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, *, listing: Sequence[object]) -> tuple[datetime, str]:
    """Reads a cursor made by ``encode_cursor`` for the same ``listing``.

    Raises:
        InvalidArgument: the cursor was not made by this server, or was made for another listing.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, key, digest = raw.split("|")
        parsed = datetime.fromisoformat(at)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidArgument(_INVALID) from None
    # The digest is not secret, so anyone can build a cursor: a key this server never writes (a NUL, which the
    # database refuses, or a non-ASCII digit such as "²", which ``int`` refuses) is refused here, as a 400.
    if parsed.tzinfo is None or not key or not (key.isascii() and key.isprintable()):
        raise InvalidArgument(_INVALID)
    if not hmac.compare_digest(digest.encode(), listing_digest(listing).encode()):
        raise InvalidArgument(_OTHER_LISTING)
    return parsed, key


def decode_uuid_cursor(cursor: str, *, listing: Sequence[object]) -> tuple[datetime, UUID]:
    """Reads a cursor whose key is a UUID (tokens, members).

    Raises:
        InvalidArgument: the cursor was not made by this server, or was made for another listing.
    """
    at, key = decode_cursor(cursor, listing=listing)
    try:
        return at, UUID(key)
    except ValueError:
        raise InvalidArgument(_INVALID) from None

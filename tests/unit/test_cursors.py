"""Hand-built cursors: the digest is public, so a cursor's key must be checked like any other input (a 400)."""

import base64
from datetime import datetime

import pytest

from domain.errors import InvalidArgument
from infrastructure.http.audit import decode_position_cursor
from infrastructure.http.paging import decode_cursor, encode_cursor, listing_digest

LISTING = ("clients", "a-project")
AT = "2024-01-01T00:00:00+00:00"


def forged(key: str, listing: tuple[str, ...] = LISTING) -> str:
    raw = f"{AT}|{key}|{listing_digest(listing)}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@pytest.mark.parametrize("key", ["a\x00b", "caf\u00e9", "a\nb", "\u00b2"])
def test_a_key_the_server_never_writes_is_refused(key: str) -> None:
    with pytest.raises(InvalidArgument):
        decode_cursor(forged(key), listing=LISTING)


def test_an_audit_cursor_with_a_non_ascii_digit_is_refused_not_a_crash() -> None:
    with pytest.raises(InvalidArgument):
        decode_position_cursor(forged("\u00b2"), listing=LISTING)


def test_cursors_the_server_writes_still_read_back() -> None:
    at = datetime.fromisoformat(AT)
    cursor = encode_cursor(at, "client_abc-123", listing=LISTING)
    assert decode_cursor(cursor, listing=LISTING) == (at, "client_abc-123")
    assert decode_position_cursor(encode_cursor(at, "42", listing=LISTING), listing=LISTING) == 42

"""The NUL test every request passes: each encoding of a NUL is found, nothing else is."""

import pytest

from infrastructure.http.nul_guard import has_nul


@pytest.mark.parametrize("data", [b"token=a\x00b", b'{"name": "a\\u0000b"}', b"scope=a%00b", b"\x00", b"%00"])
def test_a_nul_in_any_encoding_is_found(data: bytes) -> None:
    assert has_nul(data)


@pytest.mark.parametrize("data", [b"", b"token=abc&token_type_hint=access_token", b'{"name": "a\\u0001b"}',
                                  b"scope=a%01b%20c", b"100%"])
def test_anything_else_is_not(data: bytes) -> None:
    assert not has_nul(data)

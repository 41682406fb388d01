"""The NUL test every request passes: each encoding of a NUL is found, nothing else is."""

import msgspec
import pytest

from infrastructure.http.nul_guard import has_nul, has_unpaired_surrogate


@pytest.mark.parametrize("data", [b"token=a\x00b", b'{"name": "a\\u0000b"}', b"scope=a%00b", b"\x00", b"%00"])
def test_a_nul_in_any_encoding_is_found(data: bytes) -> None:
    assert has_nul(data)


@pytest.mark.parametrize("data", [b"", b"token=abc&token_type_hint=access_token", b'{"name": "a\\u0001b"}',
                                  b"scope=a%01b%20c", b"100%"])
def test_anything_else_is_not(data: bytes) -> None:
    assert not has_nul(data)


@pytest.mark.parametrize("text", [rb'{"a": "x\ud800"}', rb'{"a": "\udc00"}', rb'{"a": "ab\udc00"}',
                                  rb'{"a": "\ud800\u0041"}', rb'{"a": "\\\ud800"}', rb'{"a": "\uDBFF", "b": "\uDFFF"}'])
def test_half_a_surrogate_pair_is_found(text: bytes) -> None:
    """Each of these is refused by msgspec too (the guard only names the fault msgspec calls "truncated")."""
    assert has_unpaired_surrogate(text)
    with pytest.raises(msgspec.DecodeError):
        msgspec.json.decode(text)


@pytest.mark.parametrize("text", [rb'{"a": "\ud83d\ude00"}', rb'{"a": "\uDBFF\uDFFF"}', rb'{"a": "\\ud800"}',
                                  rb'{"a": "\\\\ud800"}', rb'{"a": "\u00e9 \\u"}', b'{"a": "plain"}', b""])
def test_whole_pairs_and_escaped_backslashes_are_not(text: bytes) -> None:
    """msgspec accepts each of these: the guard must not refuse what the endpoints take."""
    assert not has_unpaired_surrogate(text)
    if text:
        msgspec.json.decode(text)

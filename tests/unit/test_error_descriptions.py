"""error_description stays within the characters RFC 6749 section 5.2 and RFC 6750 section 3 allow."""

import pytest

from infrastructure.http.errors import bearer_challenge, description_text

ALLOWED = {0x20, 0x21, *range(0x23, 0x5C), *range(0x5D, 0x7F)}


def test_a_plain_description_is_kept_as_it_is() -> None:
    text = "unknown scope: project:read, [1-9] {x} ~ 'quoted' 100%"
    assert description_text(text) == text


@pytest.mark.parametrize(("text", "expected"), [
    ("unknown scope: a\tb", "unknown scope: a?b"),
    ('say "no"', "say ?no?"),
    ("back\\slash", "back?slash"),
    ("caf\u00e9 \u2603", "caf? ?"),
    ("line\r\nbreak\x00", "line??break?"),
])
def test_characters_outside_the_set_become_question_marks(text: str, expected: str) -> None:
    assert description_text(text) == expected
    assert all(ord(c) in ALLOWED for c in description_text(text))


def test_a_bearer_challenge_carries_only_allowed_characters_in_its_description() -> None:
    challenge = bearer_challenge("insufficient_scope", 'needs "tokens:revoke"\\\t\u00e9')
    assert challenge == ('Bearer realm="keyledger", error="insufficient_scope", '
                         'error_description="needs ?tokens:revoke????"')

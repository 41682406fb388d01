"""Strict form parsing (RFC 6749 section 3.2) and HTTP Basic client credentials (section 2.3.1)."""

import base64

import pytest

from application.oauth.errors import InvalidClient, InvalidRequest
from infrastructure.http.forms import MAX_FIELDS, basic_credentials, parse_form

FORM = "application/x-www-form-urlencoded"


def basic(raw: str) -> str:
    return "Basic " + base64.b64encode(raw.encode()).decode()


def test_parses_a_form() -> None:
    body = b"grant_type=client_credentials&scope=project%3Aread+tokens%3Aread&client_id=klc_1"
    assert parse_form(FORM, body) == {"grant_type": "client_credentials", "scope": "project:read tokens:read",
                                      "client_id": "klc_1"}


@pytest.mark.parametrize("content_type", [FORM + "; charset=utf-8", "Application/X-WWW-Form-Urlencoded", f" {FORM} "])
def test_media_type_parameters_and_case_are_accepted(content_type: str) -> None:
    assert parse_form(content_type, b"a=1") == {"a": "1"}


@pytest.mark.parametrize("content_type", ["", "application/json", "multipart/form-data; boundary=x", "text/plain",
                                          FORM + "x", "application/x-www-form-urlencoded-foo"])
def test_other_media_types_are_refused(content_type: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_form(content_type, b"grant_type=password")


@pytest.mark.parametrize("body", [b"scope=a&scope=b", b"scope=a&scope=a", b"a=1&b=2&a=1", b"scope=a&scope="])
def test_repeated_parameters_are_refused(body: bytes) -> None:
    with pytest.raises(InvalidRequest, match="repeated"):
        parse_form(FORM, body)


def test_a_parameter_repeated_after_an_empty_value_is_refused() -> None:
    # RFC 6749 section 3.2: parameters MUST NOT be included more than once, whatever their first value.
    with pytest.raises(InvalidRequest, match="repeated"):
        parse_form(FORM, b"scope=&scope=audit%3Aread")


def test_invalid_utf8_body_is_refused() -> None:
    with pytest.raises(InvalidRequest):
        parse_form(FORM, b"password=\xff\xfe")


def test_percent_encoded_invalid_utf8_is_refused() -> None:
    # Otherwise "%FF" and "%FE" both decode to U+FFFD: two different passwords would be the same one.
    with pytest.raises(InvalidRequest):
        parse_form(FORM, b"password=%FF")


def test_too_many_fields_are_refused() -> None:
    body = "&".join(f"f{i}=v" for i in range(MAX_FIELDS + 1)).encode()
    with pytest.raises(InvalidRequest):
        parse_form(FORM, body)
    assert len(parse_form(FORM, "&".join(f"f{i}=v" for i in range(MAX_FIELDS)).encode())) == MAX_FIELDS


def test_empty_values_are_treated_as_omitted() -> None:
    assert parse_form(FORM, b"grant_type=password&scope=&client_secret&username=a%40b.c") == {
        "grant_type": "password", "username": "a@b.c"}
    assert parse_form(FORM, b"") == {}


def test_basic_credentials_absent() -> None:
    assert basic_credentials(None) is None
    assert basic_credentials("") is None


def test_basic_credentials_plain() -> None:
    assert basic_credentials(basic("klc_abc:klcs_secret")) == ("klc_abc", "klcs_secret")
    assert basic_credentials("basic " + base64.b64encode(b"id:pw").decode()) == ("id", "pw")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("id:se:cret", ("id", "se:cret")),  # a raw ':' in the secret belongs to the secret
        ("id:se%3Acret", ("id", "se:cret")),
        ("my%3Aid:secret", ("my:id", "secret")),  # a ':' in the id must be encoded
        ("id:a+b", ("id", "a b")),  # form-urlencoded: '+' is a space
        ("id:a%2Bb", ("id", "a+b")),
        ("id:%C3%A9t%C3%A9", ("id", "été")),
        ("id:", ("id", "")),
    ],
)
def test_basic_credentials_are_form_urlencoded(raw: str, expected: tuple[str, str]) -> None:
    assert basic_credentials(basic(raw)) == expected


@pytest.mark.parametrize("header", ["Basic not*base64", "Basic YWJj=", "Basic YWJjZA", "Basic " + "=" * 4,
                                    "Basic " + base64.b64encode(b"\xff\xfe:x").decode(),
                                    basic("no-colon"), basic(":secret-without-id"), "Basic"])
def test_malformed_basic_credentials_are_refused(header: str) -> None:
    with pytest.raises(InvalidClient):
        basic_credentials(header)


def test_non_ascii_basic_credentials_are_refused() -> None:
    # Header bytes above 0x7f arrive as latin-1 characters; they must give invalid_client, not a 500.
    with pytest.raises(InvalidClient):
        basic_credentials("Basic \u00e9\u00e9\u00e9\u00e9")


@pytest.mark.parametrize("header", ["Bearer eyJ.abc.def", "Digest x", "Token " + basic("a:b")[6:], "Basicx YTpi"])
def test_other_schemes_are_refused(header: str) -> None:
    with pytest.raises(InvalidClient):
        basic_credentials(header)

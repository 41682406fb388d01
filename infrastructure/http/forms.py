"""Strict parsing of ``application/x-www-form-urlencoded`` OAuth requests and HTTP Basic client credentials.

RFC 6749 section 3.2: parameters sent without a value are treated as omitted, and request and response parameters
MUST NOT be included more than once. Section 2.3.1: Basic credentials are form-urlencoded before base64.
"""

import base64
from urllib.parse import parse_qsl, unquote_plus

from application.oauth.errors import InvalidClient, InvalidRequest

FORM = "application/x-www-form-urlencoded"
MAX_FIELDS = 32


def parse_form(content_type: str, body: bytes) -> dict[str, str]:
    """Returns the form's parameters, refusing other media types, bad encodings and repeated parameters."""
    if content_type.split(";", 1)[0].strip().lower() != FORM:
        raise InvalidRequest(f"the request body must be {FORM}")
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_FIELDS,
                          encoding="utf-8", errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("the request body is not valid form data") from None
    params: dict[str, str] = {}
    seen: set[str] = set()
    for name, value in pairs:
        if name in seen:
            raise InvalidRequest(f"the parameter {name!r} is repeated")
        seen.add(name)
        if value != "":
            params[name] = value
    return params


def client_authentication(authorization: str | None, params: dict[str, str]) -> tuple[str | None, str | None]:
    """The client's (client_id, client_secret): RFC 6749 section 2.3.1, client_secret_basic or client_secret_post,
    never both (the ``Authorization`` header's value, the form's parameters)."""
    basic = basic_credentials(authorization)
    client_id, client_secret = params.get("client_id"), params.get("client_secret")
    if basic is None:
        return client_id, client_secret
    if client_secret is not None:
        raise InvalidRequest("use one client authentication method, not two")
    if client_id is not None and client_id != basic[0]:
        raise InvalidRequest("client_id does not match the authenticated client")
    return basic


def basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    """Returns (client_id, client_secret) from an ``Authorization: Basic`` header, None when there is none."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic":
        raise InvalidClient("unsupported authentication scheme")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):  # binascii.Error is a ValueError; so is non-ASCII input
        raise InvalidClient("malformed Basic credentials") from None
    client_id, sep, secret = decoded.partition(":")
    if not sep or not client_id:
        raise InvalidClient("malformed Basic credentials")
    return unquote_plus(client_id), unquote_plus(secret)

"""Forged, tampered and foreign tokens are all refused with 401 invalid_token (RFC 6750 section 3.1)."""

import base64
import hashlib
import hmac
import json
import time

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from tests.conftest import client_login, signup

pytestmark = pytest.mark.e2e


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def parts(token: str) -> tuple[dict[str, object], dict[str, object]]:
    header, payload, _ = token.split(".")
    return (json.loads(base64.urlsafe_b64decode(header + "==")), json.loads(base64.urlsafe_b64decode(payload + "==")))


@pytest.fixture
def genuine(http: httpx.Client) -> tuple[dict[str, object], str]:
    account = signup(http)
    token = client_login(http, account).json()["access_token"]
    return account, token


def assert_refused(http: httpx.Client, project_id: str, token: str) -> None:
    response = http.get(f"/v1/projects/{project_id}", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401, response.text
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert response.headers["content-type"].startswith("application/problem+json")
    assert token not in response.text


def test_genuine_token_is_accepted(http: httpx.Client, genuine: tuple[dict, str]) -> None:
    account, token = genuine
    response = http.get(f"/v1/projects/{account['project']['id']}", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


def test_tampered_payload_is_refused(http: httpx.Client, genuine: tuple[dict, str]) -> None:
    account, token = genuine
    header, _, signature = token.split(".")
    claims = parts(token)[1]
    claims["scope"] = "audit:read project:read project:write"
    forged = f"{header}.{b64(json.dumps(claims).encode())}.{signature}"
    assert_refused(http, account["project"]["id"], forged)


def test_alg_none_is_refused(http: httpx.Client, genuine: tuple[dict, str]) -> None:
    account, token = genuine
    header, claims = parts(token)
    header["alg"] = "none"
    forged = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}."
    assert_refused(http, account["project"]["id"], forged)


def test_hmac_signed_with_the_public_key_is_refused(http: httpx.Client, genuine: tuple[dict, str]) -> None:
    account, token = genuine
    header, claims = parts(token)
    jwk = next(k for k in http.get("/.well-known/jwks.json").json()["keys"] if k["kid"] == header["kid"])
    public_pem = ECAlgorithm.from_jwk(json.dumps(jwk)).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header["alg"] = "HS256"
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    assert_refused(http, account["project"]["id"], f"{signing_input}.{b64(signature)}")


def test_token_signed_by_a_foreign_key_with_our_kid_is_refused(http: httpx.Client, genuine: tuple[dict, str]) -> None:
    account, token = genuine
    header, claims = parts(token)
    forged = jwt.encode(claims, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256",
                        headers={"kid": header["kid"], "typ": "at+jwt"})
    assert_refused(http, account["project"]["id"], forged)


def test_unknown_kid_is_refused(http: httpx.Client, genuine: tuple[dict, str]) -> None:
    account, token = genuine
    _, claims = parts(token)
    forged = jwt.encode(claims, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256",
                        headers={"kid": "not-a-published-kid", "typ": "at+jwt"})
    assert_refused(http, account["project"]["id"], forged)


def test_expired_foreign_and_garbage_tokens_are_refused(http: httpx.Client, genuine: tuple[dict, str]) -> None:
    account, token = genuine
    _, claims = parts(token)
    claims["exp"] = int(time.time()) - 10
    forged = jwt.encode(claims, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256",
                        headers={"kid": "x", "typ": "at+jwt"})
    assert_refused(http, account["project"]["id"], forged)
    assert_refused(http, account["project"]["id"], "not.a.jwt")
    assert_refused(http, account["project"]["id"], token[:-3])


def test_missing_or_non_bearer_credentials_get_a_challenge(http: httpx.Client, genuine: tuple[dict, str]) -> None:
    account, _ = genuine
    url = f"/v1/projects/{account['project']['id']}"
    for headers in ({}, {"Authorization": "Basic Zm9vOmJhcg=="}):
        response = http.get(url, headers=headers)
        assert response.status_code == 401
        # RFC 6750 section 3.1: no credentials (or another scheme) gets a challenge without an error code.
        assert response.headers["www-authenticate"] == 'Bearer realm="keyledger"'
    empty = http.get(url, headers={"Authorization": "Bearer"})  # a malformed request: 400 (RFC 6750 section 3.1)
    assert empty.status_code == 400 and 'error="invalid_request"' in empty.headers["www-authenticate"]


def test_health_reports_how_far_the_hosts_clock_is_from_the_databases(http: httpx.Client) -> None:
    health = http.get("/healthz").json()
    assert health["status"] == "ok"
    assert isinstance(health["clock_offset_s"], float)
    assert abs(health["clock_offset_s"]) < 5  # the server and its database share this machine's clock
    assert health["clock_measured_s_ago"] >= 0  # measured when the process started

"""The product's core story over real HTTP: sign up, log in, call the API as a person and as an API key."""

import httpx
import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from tests.conftest import client_login, password_login, signup

pytestmark = pytest.mark.e2e


def verify_independently(http: httpx.Client, token: str, base: str) -> dict[str, object]:
    """Validates ``token`` with joserfc against the published JWKS, checking typ, iss, aud and exp."""
    keys = KeySet.import_key_set(http.get("/.well-known/jwks.json").json())
    decoded = jose_jwt.decode(token, keys, algorithms=["ES256"])
    assert decoded.header["typ"] == "at+jwt"
    assert decoded.header["kid"] in {k["kid"] for k in http.get("/.well-known/jwks.json").json()["keys"]}
    registry = jose_jwt.JWTClaimsRegistry(iss={"essential": True, "value": base},
                                          aud={"essential": True, "value": f"{base}/v1"},
                                          exp={"essential": True}, iat={"essential": True},
                                          sub={"essential": True}, jti={"essential": True})
    registry.validate(decoded.claims)
    return decoded.claims


def test_person_signs_up_logs_in_and_calls_the_api(http: httpx.Client, live_server: str) -> None:
    account = signup(http)
    login = password_login(http, account)
    assert login.status_code == 200, login.text
    assert login.headers["cache-control"] == "no-store"
    body = login.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert body["refresh_token"].startswith("klrt_")
    claims = verify_independently(http, body["access_token"], live_server)
    assert claims["sub"] == account["user"]["id"]
    assert claims["client_id"] == "dashboard"
    assert "project_id" not in claims

    me = http.get("/v1/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200, me.text
    assert me.json() == {"id": account["user"]["id"], "email": account["user"]["email"],
                         "memberships": [{"project_id": account["project"]["id"], "role": "owner"}]}

    project = http.get(f"/v1/projects/{account['project']['id']}",
                       headers={"Authorization": f"Bearer {body['access_token']}"})
    assert project.status_code == 200
    assert project.json()["name"] == "Acme"
    assert project.json()["role"] == "owner"


def test_api_key_gets_its_own_token_and_calls_the_same_api(http: httpx.Client, live_server: str) -> None:
    account = signup(http)
    response = client_login(http, account)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["expires_in"] == 3600
    assert "refresh_token" not in body
    claims = verify_independently(http, body["access_token"], live_server)
    assert claims["client_id"] == account["client"]["client_id"]
    assert claims["sub"] == account["client"]["client_id"]
    assert claims["project_id"] == account["project"]["id"]

    project = http.get(f"/v1/projects/{account['project']['id']}",
                       headers={"Authorization": f"Bearer {body['access_token']}"})
    assert project.status_code == 200
    assert project.json()["id"] == account["project"]["id"]
    me = http.get("/v1/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 403
    assert me.headers["content-type"].startswith("application/problem+json")


def test_client_secret_post_works_like_basic(http: httpx.Client) -> None:
    account = signup(http)
    response = http.post("/oauth2/token", data={"grant_type": "client_credentials",
                                                "client_id": account["client"]["client_id"],
                                                "client_secret": account["client"]["client_secret"],
                                                "scope": "project:read"})
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "project:read"


def test_signup_shows_the_secret_once_with_a_hint(http: httpx.Client) -> None:
    account = signup(http)
    client = account["client"]
    assert client["client_secret"].startswith("klcs_")
    assert client["secret_hint"] == "klcs_..." + client["client_secret"][-4:]
    assert client["grant_types"] == ["client_credentials"]
    assert client["access_token_ttl"] == 3600


def test_discovery_documents(http: httpx.Client, live_server: str) -> None:
    meta = http.get("/.well-known/oauth-authorization-server").json()
    assert meta["issuer"] == live_server
    assert meta["token_endpoint"] == f"{live_server}/oauth2/token"
    assert set(meta["grant_types_supported"]) >= {"password", "client_credentials"}
    assert "client_secret_basic" in meta["token_endpoint_auth_methods_supported"]
    resource = http.get("/.well-known/oauth-protected-resource/v1").json()
    assert resource["resource"] == f"{live_server}/v1"
    assert resource["authorization_servers"] == [live_server]
    jwks = http.get("/.well-known/jwks.json").json()
    assert all("d" not in key for key in jwks["keys"])
    assert jwks["keys"][0]["alg"] == "ES256"
    schema = http.get("/schema/openapi.json")
    assert schema.status_code == 200
    assert "/oauth2/token" in schema.json()["paths"]

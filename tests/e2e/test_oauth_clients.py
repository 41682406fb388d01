"""A stock OAuth 2.0 client library (Authlib) works against keyledger without any special-casing.

The dashboard is a public client (``token_endpoint_auth_method="none"``) using the password and refresh_token
grants and RFC 7009 revocation; a project client is confidential (``client_secret_basic`` or
``client_secret_post``) using client_credentials, RFC 7662 introspection and revocation. Every result is checked
again with plain HTTP.
"""

import warnings
from collections.abc import Iterator
from typing import Any

import authlib.deprecate
import httpx
import pytest
from authlib.integrations.base_client import OAuthError

with warnings.catch_warnings():
    # Authlib 1.9 prefers the httpx2 package and warns when it falls back to httpx, which keyledger's tests use.
    warnings.simplefilter("ignore", authlib.deprecate.AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import OAuth2Client

from tests.conftest import bearer, refresh_login, signup

pytestmark = pytest.mark.e2e


def session(**kwargs: Any) -> Iterator[OAuth2Client]:
    client = OAuth2Client(timeout=30, **kwargs)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def dashboard(live_server: str) -> Iterator[OAuth2Client]:
    """The dashboard as Authlib sees it: a public client that authenticates with its client_id only."""
    yield from session(client_id="dashboard", token_endpoint_auth_method="none",
                       revocation_endpoint_auth_method="none")


def project_client(live_server: str, account: dict[str, Any], method: str) -> Iterator[OAuth2Client]:
    client = account["client"]
    yield from session(client_id=client["client_id"], client_secret=client["client_secret"],
                       token_endpoint_auth_method=method, revocation_endpoint_auth_method=method)


def test_dashboard_password_refresh_and_revoke(live_server: str, http: httpx.Client,
                                               dashboard: OAuth2Client) -> None:
    """Authlib's password grant, refresh_token() and revoke_token() do what the plain HTTP contract says."""
    account = signup(http)
    first = dict(dashboard.fetch_token(f"{live_server}/oauth2/token", username=account["user"]["email"],
                                       password=account["password"]))
    assert first["token_type"] == "Bearer" and first["refresh_token"]
    me = dashboard.get(f"{live_server}/v1/me")
    assert me.status_code == 200 and me.json()["email"] == account["user"]["email"]

    second = dict(dashboard.refresh_token(f"{live_server}/oauth2/token"))
    assert second["refresh_token"] != first["refresh_token"] and second["access_token"] != first["access_token"]
    assert http.get("/v1/me", headers=bearer(second["access_token"])).status_code == 200

    revoked = dashboard.revoke_token(f"{live_server}/oauth2/revoke", token=second["refresh_token"],
                                     token_type_hint="refresh_token")
    assert revoked.status_code == 200
    for pair in (first, second):
        assert http.get("/v1/me", headers=bearer(pair["access_token"])).status_code == 401
    assert refresh_login(http, second["refresh_token"]).json()["error"] == "invalid_grant"


def test_dashboard_errors_reach_authlib_as_oauth_errors(live_server: str, http: httpx.Client,
                                                        dashboard: OAuth2Client) -> None:
    """RFC 6749 section 5.2 error bodies are what Authlib turns into OAuthError with the right code."""
    account = signup(http)
    with pytest.raises(OAuthError) as wrong:
        dashboard.fetch_token(f"{live_server}/oauth2/token", username=account["user"]["email"], password="wrong")
    assert wrong.value.error == "invalid_grant"


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_project_client_credentials_introspect_and_revoke(live_server: str, http: httpx.Client, method: str) -> None:
    """Authlib's client_credentials fetch, introspect_token() and revoke_token() under both authentication
    methods; the token works on the API until revoked, and introspection agrees."""
    account = signup(http)
    project = account["project"]["id"]
    for client in project_client(live_server, account, method):
        token = dict(client.fetch_token(f"{live_server}/oauth2/token", grant_type="client_credentials"))
        assert token["token_type"] == "Bearer" and "refresh_token" not in token
        assert client.get(f"{live_server}/v1/projects/{project}").status_code == 200
        assert http.get(f"/v1/projects/{project}", headers=bearer(token["access_token"])).status_code == 200

        seen = client.introspect_token(f"{live_server}/oauth2/introspect", token=token["access_token"],
                                       token_type_hint="access_token")
        assert seen.status_code == 200
        assert {k: seen.json()[k] for k in ("active", "client_id", "project_id", "token_type")} == {
            "active": True, "client_id": account["client"]["client_id"], "project_id": project, "token_type": "Bearer"}

        assert client.revoke_token(f"{live_server}/oauth2/revoke", token=token["access_token"]).status_code == 200
        assert http.get(f"/v1/projects/{project}", headers=bearer(token["access_token"])).status_code == 401
        again = client.introspect_token(f"{live_server}/oauth2/introspect", token=token["access_token"])
        assert again.json() == {"active": False}


def test_a_wrong_secret_is_invalid_client_for_authlib(live_server: str, http: httpx.Client) -> None:
    """A project client with a wrong secret gets invalid_client, whichever authentication method Authlib uses."""
    account = signup(http)
    other = signup(http)
    account = {**account, "client": {**account["client"], "client_secret": other["client"]["client_secret"]}}
    for method in ("client_secret_basic", "client_secret_post"):
        for client in project_client(live_server, account, method):
            with pytest.raises(OAuthError) as refused:
                client.fetch_token(f"{live_server}/oauth2/token", grant_type="client_credentials")
            assert refused.value.error == "invalid_client"

"""Two tenants: no credential of project A reads anything of project B (invariant 2)."""

import httpx
import pytest

from tests.conftest import client_login, password_login, signup

pytestmark = pytest.mark.e2e


def test_get_project_is_isolated_between_two_tenants(http: httpx.Client) -> None:
    alice, bob = signup(http, "A"), signup(http, "B")
    alice_user = password_login(http, alice).json()["access_token"]
    alice_key = client_login(http, alice).json()["access_token"]
    for token in (alice_user, alice_key):
        own = http.get(f"/v1/projects/{alice['project']['id']}", headers={"Authorization": f"Bearer {token}"})
        assert own.status_code == 200
        other = http.get(f"/v1/projects/{bob['project']['id']}", headers={"Authorization": f"Bearer {token}"})
        # 404, not 403: existence of another tenant's project does not leak.
        assert other.status_code == 404, other.text
        assert bob["project"]["name"] not in other.text


def test_a_client_cannot_authenticate_with_another_projects_secret(http: httpx.Client) -> None:
    alice, bob = signup(http, "A"), signup(http, "B")
    response = http.post("/oauth2/token", data={"grant_type": "client_credentials"},
                         auth=(alice["client"]["client_id"], bob["client"]["client_secret"]))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_me_lists_only_the_callers_memberships(http: httpx.Client) -> None:
    alice, bob = signup(http, "A"), signup(http, "B")
    token = password_login(http, alice).json()["access_token"]
    created = http.post("/v1/projects", json={"name": "A2"}, headers={"Authorization": f"Bearer {token}"})
    assert created.status_code == 201
    me = http.get("/v1/me", headers={"Authorization": f"Bearer {token}"}).json()
    assert {m["project_id"] for m in me["memberships"]} == {alice["project"]["id"], created.json()["id"]}
    assert bob["project"]["id"] not in str(me)

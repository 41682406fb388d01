"""A NUL character is refused everywhere before it can reach an event: stored, it would fail every read model that
copies it, for every tenant, on every pass (PostgreSQL's text refuses NUL)."""

import httpx
import pytest

from tests.conftest import bearer, password_login, signup

pytestmark = pytest.mark.e2e


def test_nul_in_json_forms_queries_and_paths_is_a_400_and_the_projections_go_on(http: httpx.Client) -> None:
    account = signup(http)
    token = password_login(http, account).json()["access_token"]
    project = f"/v1/projects/{account['project']['id']}"
    refused = [
        http.post("/v1/signup", json={"email": "nul@example.com", "password": "pw-123456789",
                                       "project_name": "a\u0000b"}),
        http.post(f"{project}/clients", json={"name": "c\u0000d"}, headers=bearer(token)),
        http.post("/v1/projects", json={"name": "p\u0000"}, headers=bearer(token)),
        http.post(f"{project}/webhooks", json={"url": "https://hooks.example.com/\u0000",
                                              "event_types": ["member.added"]}, headers=bearer(token)),
        http.get(f"{project}/tokens", params={"client_id": "x\u0000"}, headers=bearer(token)),
        http.get(f"{project}/clients/klc_%00", headers=bearer(token)),
    ]
    assert [r.status_code for r in refused] == [400] * len(refused)
    assert all(r.headers["content-type"].startswith("application/problem+json") for r in refused)
    oauth = http.post("/oauth2/token", data={"grant_type": "client_credentials", "scope": "a\u0000b"},
                      auth=(account["client"]["client_id"], account["client"]["client_secret"]))
    assert oauth.status_code == 400 and oauth.json()["error"] == "invalid_request"
    # The read models kept going: a listing that waits for them answers.
    created = http.post(f"{project}/clients", json={"name": "after"}, headers=bearer(token))
    assert created.status_code == 201
    listed = http.get(f"{project}/clients", headers=bearer(token))
    assert listed.status_code == 200 and "after" in listed.text


def test_json_bodies_that_are_not_utf8_are_a_400_problem_and_change_nothing(http: httpx.Client) -> None:
    """msgspec raises UnicodeDecodeError (not its DecodeError) for such a string: it was a 500 on every /v1 JSON
    endpoint, the unauthenticated sign-up included."""
    account = signup(http)
    token = password_login(http, account).json()["access_token"]
    project = f"/v1/projects/{account['project']['id']}"
    json_type = {"content-type": "application/json"}
    authorized = {**json_type, **bearer(token)}
    refused = [
        http.post("/v1/signup", content=b'{"email":"\xff@example.com","password":"pw-123456789"}', headers=json_type),
        http.post("/v1/projects", content=b'{"name":"\xc3\x28"}', headers=authorized),
        http.post(f"{project}/clients", content=b'{"name":"caf\xe9"}',
                  headers={"content-type": "application/json; charset=latin-1", **bearer(token)}),
        http.post(f"{project}/tokens/revoke", content=b'{"token_id":"\xc3\x28"}', headers=authorized),
        # Litestar decodes a JSON parameter whatever the Content-Type says, or with none.
        http.post("/v1/signup", content=b'{"email":"\xff@example.com","password":"pw-123456789"}',
                  headers={"content-type": "text/plain"}),
        http.post(f"{project}/clients", content=b'{"name":"caf\xe9"}', headers=bearer(token)),
    ]
    assert [r.status_code for r in refused] == [400] * len(refused)
    assert all(r.headers["content-type"].startswith("application/problem+json") for r in refused)
    assert all("UTF-8" in r.json()["detail"] for r in refused)
    listed = http.get(f"{project}/clients", headers=bearer(token))
    assert listed.status_code == 200 and [c["name"] for c in listed.json()["items"]] == ["default"]
    # Valid UTF-8 beyond ASCII is accepted as before.
    accepted = http.post(f"{project}/clients", content='{"name":"café"}'.encode(), headers=authorized)
    assert accepted.status_code == 201 and accepted.json()["name"] == "café"


def test_half_a_surrogate_pair_is_named_as_such_and_changes_nothing(http: httpx.Client) -> None:
    """msgspec answered "Input data was truncated" for a high surrogate escape without its low half, though the body
    was whole; each such body now gets a 400 problem that names the fault, and a whole pair is still accepted."""
    account = signup(http)
    token = password_login(http, account).json()["access_token"]
    project = f"/v1/projects/{account['project']['id']}"
    authorized = {"content-type": "application/json", **bearer(token)}
    refused = [
        http.post("/v1/signup", headers={"content-type": "application/json"},
                  content=rb'{"email":"s@example.com","password":"pw-123456789","project_name":"a\ud800"}'),
        http.post(f"{project}/clients", content=rb'{"name":"half \ud800 pair"}', headers=authorized),
        http.post(f"{project}/clients", content=rb'{"name":"low \udc00 alone"}', headers=authorized),
    ]
    assert [r.status_code for r in refused] == [400] * len(refused)
    assert all(r.headers["content-type"].startswith("application/problem+json") for r in refused)
    assert all("surrogate" in r.json()["detail"] and "truncated" not in r.json()["detail"] for r in refused)
    accepted = http.post(f"{project}/clients", content=rb'{"name":"pair \ud83d\ude00 \\ud800"}', headers=authorized)
    assert accepted.status_code == 201 and accepted.json()["name"] == "pair \U0001f600 \\ud800"
    listed = http.get(f"{project}/clients", headers=bearer(token))
    assert sorted(c["name"] for c in listed.json()["items"]) == ["default", "pair \U0001f600 \\ud800"]

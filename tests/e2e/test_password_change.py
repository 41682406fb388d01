"""``POST /v1/me/password`` over HTTP: the current password proves the caller, the new one replaces it, and every
session of the person ends (this one too); refusals are problem details that echo no password."""

import httpx
import pytest

from tests.conftest import bearer, client_login, password_login, refresh_login, signup
from tests.e2e.test_errors import problem

pytestmark = pytest.mark.e2e

NEW = "a brand new passphrase"


def change(http: httpx.Client, token: str, current: str, new: str = NEW) -> httpx.Response:
    return http.post("/v1/me/password", json={"current_password": current, "new_password": new},
                     headers=bearer(token))


def test_a_new_password_ends_every_session_and_only_it_logs_in(http: httpx.Client) -> None:
    account = signup(http)
    first, second = password_login(http, account).json(), password_login(http, account).json()
    api_key = client_login(http, account).json()["access_token"]
    changed = change(http, first["access_token"], account["password"])
    assert changed.status_code == 200, changed.text
    assert changed.json() == {"revoked": 4} and changed.headers["cache-control"] == "no-store"
    for session in (first, second):  # refused the moment the answer came (read-your-writes)
        assert http.get("/v1/me", headers=bearer(session["access_token"])).status_code == 401
        assert refresh_login(http, session["refresh_token"]).json()["error"] == "invalid_grant"
    assert password_login(http, account).json()["error"] == "invalid_grant"
    again = password_login(http, {**account, "password": NEW})
    assert again.status_code == 200, again.text
    assert http.get("/v1/me", headers=bearer(again.json()["access_token"])).status_code == 200
    assert http.get(f"/v1/projects/{account['project']['id']}", headers=bearer(api_key)).status_code == 200


def test_refusals_are_problems_that_echo_no_password(http: httpx.Client) -> None:
    account = signup(http)
    token = password_login(http, account).json()["access_token"]
    wrong = change(http, token, "not the password at all")
    assert "current_password" in problem(wrong, 400)["detail"]
    assert "not the password at all" not in wrong.text and NEW not in wrong.text
    assert "differ" in problem(change(http, token, account["password"], account["password"]), 400)["detail"]
    problem(change(http, token, account["password"], "short"), 400)  # the sign-up's length rule
    api_key = client_login(http, account).json()["access_token"]
    problem(change(http, api_key, account["password"]), 403)  # a project's key is nobody's session
    problem(http.post("/v1/me/password", json={"current_password": account["password"], "new_password": NEW}), 401)
    assert http.get("/v1/me", headers=bearer(token)).status_code == 200  # nothing changed
    assert password_login(http, account).status_code == 200


def test_a_wrong_current_password_is_in_the_persons_projects_audit_ledger_without_where_it_came_from(
        http: httpx.Client) -> None:
    """Whoever holds a person's access token and guesses their password could take the account over: each wrong
    guess is recorded, as a refused login is. The project's copy names the person and the reason, not their address
    or device (the platform's entry keeps those), and never a password."""
    account, other = signup(http), signup(http, "Other")
    token = password_login(http, account).json()["access_token"]
    problem(change(http, token, "not the password at all"), 400)
    url = f"/v1/projects/{account['project']['id']}/audit"
    owner = password_login(http, account).json()["access_token"]
    page = http.get(url, params={"type": "PasswordChangeRefused"}, headers=bearer(owner))
    assert page.status_code == 200, page.text
    [entry] = page.json()["items"]
    assert entry["user_id"] == account["user"]["id"] and entry["data"]["reason"] == "password_wrong"
    assert entry["actor"] == {"kind": "user", "id": account["user"]["id"]}
    assert "source" not in entry["data"] and "user_agent" not in entry["data"]
    assert "not the password at all" not in page.text and NEW not in page.text
    other_url = f"/v1/projects/{other['project']['id']}/audit"
    theirs = http.get(other_url, params={"type": "PasswordChangeRefused"},
                      headers=bearer(password_login(http, other).json()["access_token"]))
    assert theirs.status_code == 200 and theirs.json()["items"] == []

"""``keyledger users disable EMAIL`` against a live server's database: the account's tokens are refused over HTTP
the moment the command returns, and it can log in or refresh no more."""

import os
import subprocess
import sys

import httpx
import pytest

from tests.conftest import SECRET_KEY, bearer, password_login, refresh_login, signup

pytestmark = pytest.mark.e2e


def keyledger(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "infrastructure.cli", *args], env={**os.environ, **env},
                          capture_output=True, timeout=120, check=False)


def last_line(output: bytes) -> str:
    """The command's own last line (log lines may come before it on stderr)."""
    return output.decode(errors="replace").strip().splitlines()[-1]


def test_disabling_an_account_ends_its_tokens_and_logins_at_once(http: httpx.Client, server_database_url: str,
                                                                redis_url: str) -> None:
    env = {"KEYLEDGER_DATABASE_URL": server_database_url, "KEYLEDGER_REDIS_URL": redis_url,
           "KEYLEDGER_SECRET_KEY": SECRET_KEY}
    ada, grace = signup(http), signup(http, "Other")
    tokens, other = password_login(http, ada).json(), password_login(http, grace).json()
    assert http.get("/v1/me", headers=bearer(tokens["access_token"])).status_code == 200

    done = keyledger(env, "users", "disable", ada["user"]["email"])
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert last_line(done.stdout) == "disabled; revoked 2 live tokens"

    assert http.get("/v1/me", headers=bearer(tokens["access_token"])).status_code == 401
    assert refresh_login(http, tokens["refresh_token"]).json()["error"] == "invalid_grant"
    assert password_login(http, ada).json()["error"] == "invalid_grant"
    assert http.get("/v1/me", headers=bearer(other["access_token"])).status_code == 200  # another account's

    again = keyledger(env, "users", "disable", ada["user"]["email"])  # idempotent: sweeps what is left
    assert (again.returncode, last_line(again.stdout)) == (0, "already disabled; revoked 0 live tokens")
    unknown = keyledger(env, "users", "disable", "nobody@example.com")
    assert (unknown.returncode, last_line(unknown.stderr)) == (1, "keyledger: no account is registered with that email")


def test_enabling_lets_the_account_log_in_afresh_and_its_old_tokens_stay_revoked(
        http: httpx.Client, server_database_url: str, redis_url: str) -> None:
    env = {"KEYLEDGER_DATABASE_URL": server_database_url, "KEYLEDGER_REDIS_URL": redis_url,
           "KEYLEDGER_SECRET_KEY": SECRET_KEY}
    ada = signup(http)
    before = password_login(http, ada).json()
    assert keyledger(env, "users", "disable", ada["user"]["email"]).returncode == 0
    assert password_login(http, ada).json()["error"] == "invalid_grant"

    done = keyledger(env, "users", "enable", ada["user"]["email"])
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert last_line(done.stdout) == "enabled; the person logs in again (their earlier tokens stay revoked)"
    after = password_login(http, ada)
    assert after.status_code == 200, after.text
    assert http.get("/v1/me", headers=bearer(after.json()["access_token"])).status_code == 200
    assert http.get("/v1/me", headers=bearer(before["access_token"])).status_code == 401
    assert refresh_login(http, before["refresh_token"]).json()["error"] == "invalid_grant"

    again = keyledger(env, "users", "enable", ada["user"]["email"])
    assert (again.returncode, last_line(again.stdout)) == (0, "not disabled")
    unknown = keyledger(env, "users", "enable", "nobody@example.com")
    assert (unknown.returncode, last_line(unknown.stderr)) == (1, "keyledger: no account is registered with that email")

"""Abuse limits over HTTP, on servers of their own with low limits (3 failures per account or client, 6 per source
address). Each test speaks from its own loopback address (127.0.0.N: real, distinct peer addresses on Linux), so
the per-address counters of different tests never meet."""

import contextlib
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.conftest import (
    SECRET_KEY,
    fresh_database,
    password_login,
    signup,
    start_server,
    stop_server,
    wait_until_up,
)

pytestmark = pytest.mark.e2e

PER_ACCOUNT, PER_CLIENT, PER_ADDRESS, LOCKOUT = 3, 3, 6, 900
PARALLEL = 40


@contextlib.contextmanager
def server(server_url: str, redis_url: str, **extra: str) -> Iterator[str]:
    with fresh_database(server_url) as url:
        proc, base = start_server({
            "KEYLEDGER_DATABASE_URL": url, "KEYLEDGER_REDIS_URL": redis_url, "KEYLEDGER_SECRET_KEY": SECRET_KEY,
            "KEYLEDGER_MAX_FAILURES_PER_ACCOUNT": str(PER_ACCOUNT),
            "KEYLEDGER_MAX_FAILURES_PER_CLIENT": str(PER_CLIENT),
            "KEYLEDGER_MAX_FAILURES_PER_ADDRESS": str(PER_ADDRESS), "KEYLEDGER_LOCKOUT": str(LOCKOUT), **extra})
        try:
            wait_until_up(base, proc)
            yield base
        finally:
            output = stop_server(proc)
            if b"Traceback" in output:
                print(output.decode(errors="replace"))


@pytest.fixture(scope="module")
def limited(server_url: str, redis_url: str) -> Iterator[str]:
    """A server with low limits and no trusted proxy."""
    with server(server_url, redis_url) as base:
        yield base


@pytest.fixture(scope="module")
def behind_proxy(server_url: str, redis_url: str) -> Iterator[str]:
    """A server that trusts X-Forwarded-For from 127.0.0.1 only."""
    with server(server_url, redis_url, KEYLEDGER_TRUSTED_PROXIES="127.0.0.1") as base:
        yield base


@contextlib.contextmanager
def peer(base: str, n: int) -> Iterator[httpx.Client]:
    """An HTTP client whose connections come from 127.0.0.``n``."""
    transport = httpx.HTTPTransport(local_address=f"127.0.0.{n}")
    with httpx.Client(base_url=base, timeout=60, transport=transport) as http:
        yield http


def wrong(account: dict[str, Any]) -> dict[str, Any]:
    return {**account, "password": "not " + account["password"]}


def unknown(n: int) -> dict[str, Any]:
    return {"user": {"email": f"nobody-{n}@example.com"}, "password": "whatever"}


def basic(account: dict[str, Any], secret: str | None = None) -> tuple[str, str]:
    """Basic credentials of the account's client, with its own secret or ``secret`` (another client's: well formed,
    wrong)."""
    return account["client"]["client_id"], secret or account["client"]["client_secret"]


def client_credentials(http: httpx.Client, auth: tuple[str, str], **headers: str) -> httpx.Response:
    return http.post("/oauth2/token", data={"grant_type": "client_credentials"}, auth=auth, headers=headers)


def too_many(response: httpx.Response) -> dict[str, str]:
    """A 429 with Retry-After (seconds), no-store and an RFC 6749-shaped body."""
    assert response.status_code == 429, response.text
    assert 0 < int(response.headers["retry-after"]) <= LOCKOUT
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["error"] == "temporarily_unavailable" and body["error_description"]
    return dict(body)


def refused(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"] == error and "retry-after" not in response.headers


def test_the_account_locks_and_refuses_even_the_right_password(limited: str) -> None:
    with peer(limited, 10) as http:
        account = signup(http)
        for _ in range(PER_ACCOUNT):
            refused(password_login(http, wrong(account)), 400, "invalid_grant")
        too_many(password_login(http, account))
    with peer(limited, 11) as elsewhere:
        too_many(password_login(elsewhere, account))  # locked per account, from any address
        assert password_login(elsewhere, signup(elsewhere)).status_code == 200  # other accounts are not


def test_forty_parallel_wrong_passwords_admit_at_most_the_limit(limited: str) -> None:
    with peer(limited, 12) as http:
        account = signup(http)
        with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
            responses = list(pool.map(lambda _: password_login(http, wrong(account)), range(PARALLEL)))
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [400] * PER_ACCOUNT + [429] * (PARALLEL - PER_ACCOUNT)
        for response in responses:
            if response.status_code == 429:
                too_many(response)
        too_many(password_login(http, account))
        # Refused guesses were not counted against the address: 3 failures < 6, another account still logs in.
        assert password_login(http, signup(http)).status_code == 200


def test_an_address_that_fails_too_often_is_refused_for_every_account(limited: str) -> None:
    with peer(limited, 13) as http:
        account = signup(http)
        for n in range(PER_ADDRESS):
            refused(password_login(http, unknown(n)), 400, "invalid_grant")
        too_many(password_login(http, account))
        too_many(client_credentials(http, basic(account)))  # one address counter for every kind of failure
    with peer(limited, 14) as elsewhere:
        assert password_login(elsewhere, account).status_code == 200
        assert client_credentials(elsewhere, basic(account)).status_code == 200


def test_an_unknown_email_locks_exactly_like_a_registered_one(limited: str) -> None:
    answers = []
    for n, who in ((15, "registered"), (16, "unknown")):
        with peer(limited, n) as http:
            account = signup(http) if who == "registered" else unknown(100)
            for _ in range(PER_ACCOUNT):
                refused(password_login(http, wrong(account)), 400, "invalid_grant")
            answers.append(too_many(password_login(http, account)))
    assert answers[0] == answers[1]


def test_a_successful_login_resets_the_account_counter(limited: str) -> None:
    with peer(limited, 17) as http:
        account = signup(http)
        for _ in range(PER_ACCOUNT - 1):
            refused(password_login(http, wrong(account)), 400, "invalid_grant")
        assert password_login(http, account).status_code == 200
    with peer(limited, 18) as elsewhere:
        for _ in range(PER_ACCOUNT - 1):
            refused(password_login(elsewhere, wrong(account)), 400, "invalid_grant")
        assert password_login(elsewhere, account).status_code == 200


def test_failed_client_authentication_locks_the_address_out_of_the_client(limited: str) -> None:
    """The guessing address is refused the client on every endpoint, even with the right secret; the client's own
    integration, from another address, is not: knowing a client_id (every token names it) locks no API key out."""
    with peer(limited, 19) as http:
        account, other = signup(http), signup(http)
        for _ in range(PER_CLIENT):
            refused(client_credentials(http, basic(account, other["client"]["client_secret"])), 401, "invalid_client")
        too_many(client_credentials(http, basic(account)))
        too_many(http.post("/oauth2/revoke", data={"token": "x"}, auth=basic(account)))
        too_many(http.post("/oauth2/introspect", data={"token": "x"}, auth=basic(account)))
        assert client_credentials(http, basic(other)).status_code == 200  # 3 failures < 6: the address is not locked
    with peer(limited, 20) as elsewhere:
        assert client_credentials(elsewhere, basic(account)).status_code == 200
        assert elsewhere.post("/oauth2/introspect", data={"token": "x"}, auth=basic(account)).json() == {
            "active": False}


def test_failures_on_introspection_and_revocation_count_for_the_client(limited: str) -> None:
    with peer(limited, 21) as http:
        account, other = signup(http), signup(http)
        stolen = basic(account, other["client"]["client_secret"])
        refused(http.post("/oauth2/introspect", data={"token": "x"}, auth=stolen), 401, "invalid_client")
        refused(http.post("/oauth2/revoke", data={"token": "x"}, auth=stolen), 401, "invalid_client")
        refused(http.post("/oauth2/revoke", data={"token": "x", "client_id": account["client"]["client_id"],
                                                  "client_secret": "klcs_malformed"}), 401, "invalid_client")
        too_many(http.post("/oauth2/introspect", data={"token": "x"}, auth=basic(account)))


def test_forty_parallel_wrong_client_secrets_admit_at_most_the_limit(limited: str) -> None:
    """client_credentials requests are decided in group-commit batches: the limit still holds."""
    with peer(limited, 22) as http:
        account, other = signup(http), signup(http)
        stolen = basic(account, other["client"]["client_secret"])
        with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
            responses = list(pool.map(lambda _: client_credentials(http, stolen), range(PARALLEL)))
        failures = [r for r in responses if r.status_code == 401]
        assert 1 <= len(failures) <= PER_CLIENT
        for response in responses:
            if response.status_code != 401:
                too_many(response)
        too_many(client_credentials(http, basic(account)))


def test_x_forwarded_for_is_ignored_without_a_trusted_proxy(limited: str) -> None:
    """Even from 127.0.0.1, which uvicorn would trust by default."""
    with peer(limited, 1) as http:
        for n in range(PER_ADDRESS):
            response = http.post("/oauth2/token", headers={"X-Forwarded-For": f"203.0.113.{n}"}, data={
                "grant_type": "password", "client_id": "dashboard", "username": f"xff-{n}@example.com",
                "password": "guess"})
            refused(response, 400, "invalid_grant")
        too_many(http.post("/oauth2/token", headers={"X-Forwarded-For": "203.0.113.99"}, data={
            "grant_type": "password", "client_id": "dashboard", "username": "xff-last@example.com",
            "password": "guess"}))


def test_a_trusted_proxy_s_x_forwarded_for_is_the_source_address(behind_proxy: str) -> None:
    def attempt(http: httpx.Client, forwarded_for: str, n: int) -> httpx.Response:
        return http.post("/oauth2/token", headers={"X-Forwarded-For": forwarded_for}, data={
            "grant_type": "password", "client_id": "dashboard", "username": f"proxied-{n}@example.com",
            "password": "guess"})

    with peer(behind_proxy, 1) as proxy:
        for n in range(PER_ADDRESS):
            refused(attempt(proxy, "203.0.113.5", n), 400, "invalid_grant")
        too_many(attempt(proxy, "203.0.113.5", 99))
        refused(attempt(proxy, "203.0.113.6", 99), 400, "invalid_grant")  # another client behind the proxy
    with peer(behind_proxy, 24) as untrusted:  # not the proxy: its header is ignored, its own address counts
        refused(attempt(untrusted, "203.0.113.5", 98), 400, "invalid_grant")


def signup_from(http: httpx.Client, address: str) -> httpx.Response:
    email = f"signup-{uuid.uuid4().hex[:12]}@example.com"
    return http.post("/v1/signup", json={"email": email, "password": "pw-" + uuid.uuid4().hex},
                     headers={"X-Forwarded-For": address})


def test_sign_ups_are_limited_per_address_even_in_parallel(server_url: str, redis_url: str) -> None:
    """Each sign-up costs an argon2id hash and says whether an e-mail is registered: one address gets so many."""
    limit = 4
    with server(server_url, redis_url, KEYLEDGER_TRUSTED_PROXIES="127.0.0.1",
                KEYLEDGER_MAX_SIGNUPS_PER_ADDRESS=str(limit)) as base, httpx.Client(base_url=base, timeout=60) as http:
        with ThreadPoolExecutor(max_workers=12) as pool:
            answers = list(pool.map(lambda _: signup_from(http, "203.0.113.5"), range(12)))
        assert sorted(a.status_code for a in answers) == [201] * limit + [429] * (12 - limit)
        refused = next(a for a in answers if a.status_code == 429)
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert int(refused.headers["retry-after"]) > 0 and refused.json()["status"] == 429
        assert signup_from(http, "203.0.113.6").status_code == 201  # another address is not held back
        assert signup_from(http, "203.0.113.5").status_code == 429  # and this one stays refused

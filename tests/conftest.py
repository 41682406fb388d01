"""Shared fixtures: real PostgreSQL and Redis (configured or embedded), settings, containers and a live server.

``KEYLEDGER_TEST_DATABASE_URL`` / ``KEYLEDGER_TEST_REDIS_URL`` point at servers to use; without them the suite starts
the embedded servers once per session. Every session gets a fresh database of its own, dropped at the end.
"""

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from infrastructure import embedded
from infrastructure.bootstrap import Container, Endpoints, build
from infrastructure.postgres import scratch_database
from infrastructure.settings import Settings

SECRET_KEY = "test-server-key-" + "k" * 40


@pytest.fixture(scope="session")
def services_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def server_url(services_dir: Path) -> Iterator[str]:
    """URL of a PostgreSQL server's maintenance database."""
    configured = os.environ.get("KEYLEDGER_TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    server, _ = embedded.start_postgres(services_dir)
    yield server.get_uri()
    embedded.stop(server, None)


def fresh_database(server_url: str) -> contextlib.AbstractContextManager[str]:
    """Creates a uniquely named database and drops it afterwards."""
    return scratch_database(server_url, "keyledger_test")


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    """A fresh database for the in-process integration tests."""
    with fresh_database(server_url) as url:
        yield url


@pytest.fixture(scope="session")
def server_database_url(server_url: str) -> Iterator[str]:
    """A fresh database for the live server (its projections run in the server, not in the tests)."""
    with fresh_database(server_url) as url:
        yield url


@pytest.fixture(scope="session")
def redis_url(services_dir: Path) -> Iterator[str]:
    configured = os.environ.get("KEYLEDGER_TEST_REDIS_URL")
    if configured:
        yield configured
        return
    server, url = embedded.start_redis(services_dir)
    yield url
    embedded.stop(None, server)


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings(secret_key=SECRET_KEY, issuer="http://127.0.0.1:8000")


@pytest.fixture(scope="session")
def endpoints(database_url: str, redis_url: str) -> Endpoints:
    return Endpoints(database_url=database_url, redis_url=redis_url)


@pytest.fixture(scope="session")
def container(settings: Settings, endpoints: Endpoints) -> Iterator[Container]:
    """A process's components on the session database, projections running."""
    built = build(settings, endpoints, migrate=True)
    built.start_projections()
    yield built
    built.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"keyledger serve exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError("keyledger serve did not come up")


def start_server(env: dict[str, str], *args: str, output: Any = None) -> tuple[subprocess.Popen[bytes], str]:
    """Starts ``keyledger serve`` in a subprocess on a free port; its output goes to a pipe read when it stops, or
    to ``output`` (a file) for a server that may log more than a pipe holds before then."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # The suite signs up hundreds of accounts from 127.0.0.1: servers that test the sign-up limit set their own.
    full_env = {**os.environ, "KEYLEDGER_ISSUER": url, "KEYLEDGER_MAX_SIGNUPS_PER_ADDRESS": "1000000", **env}
    proc = subprocess.Popen([sys.executable, "-m", "infrastructure.cli", "serve", "--port", str(port), *args],
                            env=full_env, stdout=output or subprocess.PIPE, stderr=subprocess.STDOUT)
    return proc, url


def stop_server(proc: subprocess.Popen[bytes]) -> bytes:
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out or b""


@contextlib.contextmanager
def own_server(server_url: str, redis_url: str, **settings: str) -> Iterator[str]:
    """A ``keyledger serve`` on a fresh database of its own, with extra ``KEYLEDGER_*`` settings; stopped after."""
    with fresh_database(server_url) as url:
        proc, base = start_server({"KEYLEDGER_DATABASE_URL": url, "KEYLEDGER_REDIS_URL": redis_url,
                                   "KEYLEDGER_SECRET_KEY": SECRET_KEY, **settings})
        try:
            wait_until_up(base, proc)
            yield base
        finally:
            stop_server(proc)


@pytest.fixture(scope="session")
def live_server(server_database_url: str, redis_url: str) -> Iterator[str]:
    """A real ``keyledger serve`` over HTTP on a database of its own."""
    env = {"KEYLEDGER_DATABASE_URL": server_database_url, "KEYLEDGER_REDIS_URL": redis_url,
           "KEYLEDGER_SECRET_KEY": SECRET_KEY}
    proc, url = start_server(env)
    try:
        wait_until_up(url, proc)
    except Exception:
        print(stop_server(proc).decode(errors="replace"))
        raise
    yield url
    stop_server(proc)


@pytest.fixture
def http(live_server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server, timeout=30) as client:
        yield client


def signup(http: httpx.Client, project_name: str = "Acme") -> dict[str, Any]:
    """Signs up a new person over HTTP; returns the 201 body plus the password used."""
    email = f"user-{uuid.uuid4().hex[:12]}@example.com"
    password = "pw-" + uuid.uuid4().hex
    response = http.post("/v1/signup", json={"email": email, "password": password, "project_name": project_name})
    assert response.status_code == 201, response.text
    return {**response.json(), "password": password}


def password_login(http: httpx.Client, account: dict[str, Any], **extra: str) -> httpx.Response:
    return http.post("/oauth2/token", data={"grant_type": "password", "username": account["user"]["email"],
                                            "password": account["password"], "client_id": "dashboard", **extra})


def client_login(http: httpx.Client, account: dict[str, Any], **extra: str) -> httpx.Response:
    client = account["client"]
    return http.post("/oauth2/token", data={"grant_type": "client_credentials", **extra},
                     auth=(client["client_id"], client["client_secret"]))


def bearer(token: str) -> dict[str, str]:
    """The Authorization header of an RFC 6750 bearer request."""
    return {"Authorization": f"Bearer {token}"}


def refresh_login(http: httpx.Client, refresh_token: str, **extra: str) -> httpx.Response:
    """The dashboard's refresh_token grant (public client: client_id in the form, no secret)."""
    return http.post("/oauth2/token", data={"grant_type": "refresh_token", "refresh_token": refresh_token,
                                            "client_id": "dashboard", **extra})


def revoke_token(http: httpx.Client, token: str, account: dict[str, Any] | None = None, **extra: str) -> httpx.Response:
    """RFC 7009 revocation: as the dashboard without ``account``, else as the account's project client (Basic)."""
    if account is None:
        return http.post("/oauth2/revoke", data={"token": token, "client_id": "dashboard", **extra})
    client = account["client"]
    return http.post("/oauth2/revoke", data={"token": token, **extra},
                     auth=(client["client_id"], client["client_secret"]))


def introspect_token(http: httpx.Client, account: dict[str, Any], token: str, **extra: str) -> httpx.Response:
    """RFC 7662 introspection as the account's project client (Basic)."""
    client = account["client"]
    return http.post("/oauth2/introspect", data={"token": token, **extra},
                     auth=(client["client_id"], client["client_secret"]))


def eventually(predicate: Any, timeout: float = 30.0, interval: float = 0.05) -> None:
    """Waits (with a deadline, never asserting on time itself) until ``predicate()`` is true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError("condition not reached in time")

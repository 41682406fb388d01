"""Expiry over HTTP: a 5-second token is refused at its instant with no sweep running; the sweep, run by a real
Dramatiq worker on the real Redis broker, records its TokenExpired later."""

import time
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import httpx
import jwt
import pytest

from domain.token import Token
from infrastructure.bootstrap import Container, Endpoints, build
from tests.conftest import SECRET_KEY, bearer, eventually, introspect_token, signup
from tests.e2e.support import login, short_lived_token
from workers.inprocess import in_process_workers
from workers.runtime import enqueue

pytestmark = pytest.mark.e2e


@pytest.fixture
def server_container(server_database_url: str, redis_url: str) -> Iterator[Container]:
    """A worker process's container on the live server's database (the server itself runs no worker)."""
    from infrastructure.settings import Settings  # noqa: PLC0415

    built = build(Settings(secret_key=SECRET_KEY), Endpoints(database_url=server_database_url, redis_url=redis_url))
    yield built
    built.close()


def listed(http: httpx.Client, account: dict[str, Any], token_id: str, **params: str) -> list[dict[str, Any]]:
    owner = login(http, account)
    page = http.get(f"/v1/projects/{account['project']['id']}/tokens", params={"limit": 100, **params},
                    headers=bearer(owner))
    assert page.status_code == 200, page.text
    return [t for t in page.json()["items"] if t["token_id"] == token_id]


def test_a_five_second_token_is_refused_without_a_sweep_and_the_sweep_records_it_later(
        http: httpx.Client, server_container: Container, redis_url: str) -> None:
    account, other = signup(http), signup(http, "Other")
    token, with_client = short_lived_token(http, account)
    token_id = jwt.decode(token, options={"verify_signature": False})["jti"]
    project_url = f"/v1/projects/{account['project']['id']}"
    assert http.get(project_url, headers=bearer(token)).status_code == 200
    assert introspect_token(http, with_client, token).json()["active"] is True
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    while time.time() < exp:  # no sweep runs anywhere: the server alone must refuse it at its instant
        time.sleep(0.1)
    refused = http.get(project_url, headers=bearer(token))
    assert refused.status_code == 401 and "invalid_token" in refused.headers["www-authenticate"]
    assert introspect_token(http, with_client, token).json() == {"active": False}
    before_sweep = listed(http, account, token_id, status="expired")
    assert [(t["status"], t["ended_reason"], t["ended_by"]) for t in before_sweep] == [("expired", "expired", "system")]
    assert before_sweep[0]["ended_at"] == before_sweep[0]["expires_at"]
    assert server_container.app.load(UUID(token_id), Token).expired is False

    with in_process_workers(server_container, redis_url, threads=1) as broker:
        enqueue(broker, "expire-tokens")
        eventually(lambda: server_container.app.load(UUID(token_id), Token).expired)
    # The listing waits for the model to apply the store's head: the sweep's row is the one shown before it.
    assert listed(http, account, token_id, status="expired") == before_sweep
    assert listed(http, account, token_id, status="active") == []
    assert listed(http, other, token_id) == [] and listed(http, other, token_id, status="expired") == []
    assert http.get(project_url, headers=bearer(token)).status_code == 401
    assert introspect_token(http, with_client, token).json() == {"active": False}

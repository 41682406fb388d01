"""Introspection on the event loop (``infrastructure.http.introspection``) against the real store and Redis: it
answers exactly what the general path answers, and hands back to it whenever anything is not known to be in order."""

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio

from application.accounts import SignedUp
from application.clients import RotateSecret
from application.oauth.grants import TokenRequest
from application.oauth.revocation import RevocationRequest
from infrastructure.bootstrap import Container
from infrastructure.http.gate import RequestGate, events_table, revoked_table
from infrastructure.http.introspection import INACTIVE, FastIntrospection
from tests.integration.support import PASSWORD, sign_up


def client_token(container: Container, account: SignedUp) -> str:
    return str(container.tokens.handle(TokenRequest(
        grant_type="client_credentials", client_id=account.client.client.client_id,
        client_secret=account.client.client_secret)).access_token)


class Harness:
    """A FastIntrospection on its own event loop, pool and async Redis client."""

    def __init__(self, container: Container, database_url: str, redis_url: str) -> None:
        self.container = container
        self.loop = asyncio.new_event_loop()
        self.gate = RequestGate(database_url, lookup_table=container.lookup.table("token_lookup"),
                                events_table=events_table(container.app), revoked_table=revoked_table(container.app),
                                max_size=2)
        self.loop.run_until_complete(self.gate.open())
        self.redis = redis.asyncio.Redis.from_url(redis_url)
        self.fast = FastIntrospection(container, pool=self.gate.pool, redis_client=self.redis,
                                      events_table=events_table(container.app),
                                      revoked_table=revoked_table(container.app))

    def answer(self, account: SignedUp, token: str, secret: str | None = None) -> dict[str, Any] | None:
        client = account.client.client
        return self.loop.run_until_complete(self.fast.answer(client.client_id, secret or account.client.client_secret,
                                                             token, "198.51.100.7"))

    def general(self, account: SignedUp, token: str) -> dict[str, Any]:
        """The general path, which also teaches the fast path this client's secret."""
        client = self.container.app.load(account.client.client.id, type(account.client.client))
        answer = self.container.introspection.handle(client, token)
        self.fast.remember(client, account.client.client_secret)
        return answer

    def close(self) -> None:
        self.loop.run_until_complete(self.gate.close())
        self.loop.run_until_complete(self.redis.aclose())
        self.loop.close()


@pytest.fixture
def harness(container: Container, database_url: str, redis_url: str) -> Iterator[Harness]:
    built = Harness(container, database_url, redis_url)
    yield built
    built.close()


def test_an_unknown_secret_is_left_to_the_general_path(harness: Harness, container: Container) -> None:
    account = sign_up(container)
    assert harness.answer(account, client_token(container, account)) is None


def test_a_known_client_gets_what_the_general_path_answers(harness: Harness, container: Container) -> None:
    account = sign_up(container)
    token = client_token(container, account)
    general = harness.general(account, token)
    assert general["active"] is True
    assert harness.answer(account, token) == general


def test_revoked_tokens_other_projects_and_garbage_are_inactive(harness: Harness, container: Container) -> None:
    account, other = sign_up(container), sign_up(container, project="B")
    token, foreign = client_token(container, account), client_token(container, other)
    harness.general(account, token)
    assert harness.answer(account, foreign) == INACTIVE
    assert harness.answer(account, "not-a-token") == INACTIVE
    container.revocation.handle(account.client.client, RevocationRequest(token=token, token_type_hint=None))
    assert harness.answer(account, token) == INACTIVE == harness.general(account, token)


def test_a_changed_client_or_a_wrong_secret_goes_back_to_the_general_path(harness: Harness,
                                                                          container: Container) -> None:
    account = sign_up(container)
    token = client_token(container, account)
    harness.general(account, token)
    assert harness.answer(account, token, secret=account.client.client_secret[:-4] + "AAAA") is None
    container.clients.rotate(RotateSecret(project_id=account.project.id,
                                                 client_id=account.client.client.client_id, grace_period=0,
                                                 actor=f"user:{account.user.id}"))
    assert harness.answer(account, token) is None  # the stream moved on: the copy is stale


def test_counted_failures_go_back_to_the_general_path(harness: Harness, container: Container) -> None:
    account = sign_up(container)
    token = client_token(container, account)
    harness.general(account, token)
    limiter = container.tokens.limiter
    key = ("client", account.client.client.client_id)
    limiter.reserve([key])  # one failure counted against the client
    try:
        assert harness.answer(account, token) is None
    finally:
        limiter.release([key], reset=(key,))
    assert harness.answer(account, token) is not None


def test_refresh_and_dashboard_tokens_are_left_to_the_general_path(harness: Harness, container: Container) -> None:
    account = sign_up(container)
    harness.general(account, client_token(container, account))
    login = container.tokens.handle(TokenRequest(grant_type="password", client_id="dashboard",
                                                 username=account.user.email, password=PASSWORD))
    assert harness.answer(account, login.refresh_token) is None
    assert harness.answer(account, login.access_token) is None
    assert harness.general(account, login.refresh_token)["active"] is True

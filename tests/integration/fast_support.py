"""A FastIntrospection (the event-loop paths of introspection and revocation) on its own loop, pool and Redis
client, for the integration tests of those paths."""

import asyncio
from typing import Any

import redis.asyncio

from application.accounts import SignedUp
from application.oauth.grants import TokenRequest
from infrastructure.bootstrap import Container
from infrastructure.http.gate import RequestGate, events_table, revoked_table
from infrastructure.http.introspection import FastIntrospection


def client_token(container: Container, account: SignedUp) -> str:
    return str(container.tokens.handle(TokenRequest(
        grant_type="client_credentials", client_id=account.client.client.client_id,
        client_secret=account.client.client_secret)).access_token)


SOURCE = "198.51.100.7"  # the address every request of the harness comes from


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
        self.fast = FastIntrospection(container, gate=self.gate, redis_client=self.redis)

    def answer(self, account: SignedUp, token: str, secret: str | None = None) -> dict[str, Any] | None:
        client = account.client.client
        return self.loop.run_until_complete(self.fast.answer(client.client_id, secret or account.client.client_secret,
                                                             token, SOURCE))

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

"""Load scenarios, registered by name in :data:`SCENARIOS`.

A scenario is one async function that, given the :class:`~benchmarks.fixtures.SetupContext` (target and
bench accounts), does whatever unmeasured setup it needs and returns a :class:`Plan`: a pool of prebuilt
requests that the virtual users send round-robin, and what a successful response looks like. To add a
scenario (introspection, refresh, ``/v1`` reads...), write one function decorated with
``@scenario("name")``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from benchmarks.fixtures import DASHBOARD_CLIENT_ID, SetupContext, basic_auth, form
from benchmarks.httpclient import build_request

__all__ = ["SCENARIOS", "Plan", "ScenarioBuilder", "scenario"]

_FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@dataclass(frozen=True, slots=True)
class Plan:
    """What the virtual users send during a scenario (picklable, handed to worker processes).

    Attributes:
        requests: Prebuilt request bytes; each virtual user cycles through them, starting at its own index.
        expect_in_body: Byte strings a successful body must contain; a 2xx response lacking one counts as an
            error.
    """

    requests: tuple[bytes, ...]
    expect_in_body: tuple[bytes, ...] = ()


ScenarioBuilder = Callable[[SetupContext], Awaitable[Plan]]

SCENARIOS: dict[str, ScenarioBuilder] = {}


def scenario(name: str) -> Callable[[ScenarioBuilder], ScenarioBuilder]:
    """Register the decorated builder under ``name`` (the value of ``--scenario``)."""

    def register(builder: ScenarioBuilder) -> ScenarioBuilder:
        if name in SCENARIOS:
            raise ValueError(f"scenario {name!r} registered twice")
        SCENARIOS[name] = builder
        return builder

    return register


@scenario("client_credentials")
async def client_credentials(ctx: SetupContext) -> Plan:
    """``POST /oauth2/token`` with the client_credentials grant, client_secret_basic, rotating clients."""
    requests = tuple(
        build_request(
            ctx.target,
            "POST",
            "/oauth2/token",
            {**_FORM, "Authorization": basic_auth(account.client_id, account.client_secret)},
            form({"grant_type": "client_credentials"}),
        )
        for account in ctx.accounts
    )
    return Plan(requests, expect_in_body=(b'"access_token"',))


@scenario("password")
async def password(ctx: SetupContext) -> Plan:
    """``POST /oauth2/token`` with the password grant (argon2id: slow by design), rotating users."""
    requests = tuple(
        build_request(
            ctx.target,
            "POST",
            "/oauth2/token",
            _FORM,
            form(
                {
                    "grant_type": "password",
                    "username": account.email,
                    "password": account.password,
                    "client_id": DASHBOARD_CLIENT_ID,
                }
            ),
        )
        for account in ctx.accounts
    )
    return Plan(requests, expect_in_body=(b'"access_token"', b'"refresh_token"'))


@scenario("me")
async def me(ctx: SetupContext) -> Plan:
    """``GET /v1/me`` with a user's bearer access token (obtained by a password grant in setup)."""
    tokens = await asyncio.gather(*(ctx.password_tokens(account) for account in ctx.accounts))
    requests = tuple(
        build_request(ctx.target, "GET", "/v1/me", {"Authorization": f"Bearer {token['access_token']}"})
        for token in tokens
    )
    return Plan(requests)

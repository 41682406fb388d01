"""Load scenarios, registered by name in :data:`SCENARIOS`.

A scenario is one async function that, given the :class:`~benchmarks.fixtures.SetupContext` (target and
bench accounts), does whatever unmeasured setup it needs and returns a :class:`Plan`: a pool of prebuilt
requests that the virtual users send round-robin, and what a successful response looks like. To add a
scenario, write one function decorated with ``@scenario("name")``. A scenario whose requests depend on earlier
responses (``refresh``, ``revoke``) gives each virtual user a :class:`~benchmarks.sessions.Session` instead.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote

from benchmarks.fixtures import DASHBOARD_CLIENT_ID, Account, SetupContext, SetupError, basic_auth, form
from benchmarks.httpclient import Connection, HttpProtocolError, build_request
from benchmarks.seed_logins import seed_logins
from benchmarks.sessions import (
    DashboardRevokeQueue,
    LogoutQueue,
    RefreshChain,
    RevokeQueue,
    Session,
    SessionStepError,
    json_object,
)

__all__ = ["SCENARIOS", "Plan", "ScenarioBuilder", "scenario"]

_FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@dataclass(frozen=True, slots=True)
class Plan:
    """What the virtual users send during a scenario (picklable, handed to worker processes).

    Attributes:
        requests: Prebuilt request bytes; each virtual user cycles through them, starting at its own index.
        expect_in_body: Byte strings a successful body must contain; a 2xx response lacking one counts as an
            error.
        status: The status a success must have; None accepts any 2xx.
        check: Called with a successful body; returns an error description, or None if the body is right.
            Must be picklable (a module-level function).
        sessions: Instead of ``requests``: one session per virtual user (at least ``concurrency`` of them);
            virtual user ``i``, numbered across all processes, uses ``sessions[i]``, which judges its responses.
    """

    requests: tuple[bytes, ...]
    expect_in_body: tuple[bytes, ...] = ()
    status: int | None = None
    check: Callable[[bytes], str | None] | None = None
    sessions: tuple[Session, ...] = ()


_TOKENS_PER_CLIENT = 4  # access tokens per project client for the introspection and v1_read scenarios
_REVOKE_POOL_MARGIN = 1.25  # pool = estimated rate x window x margin
_PAGED_MEMBERS = 1_000  # members (besides the owner) of the project the page scenarios read
_PAGED_CLIENTS = 1_000  # clients of that project
_PAGE_LIMIT = 50
_DEEP_CURSORS = 4  # cursors of deeper pages; half the requests read the first page, half follow one of these
_TOKEN_MARGIN = 30.0  # seconds the owner's access token must outlive the scenario's window

ScenarioBuilder = Callable[[SetupContext], Awaitable[Plan]]

SCENARIOS: dict[str, ScenarioBuilder] = {}


def _virtual_users(ctx: SetupContext) -> list[Account]:
    """Each virtual user's bench account (the accounts shared round-robin)."""
    return [ctx.accounts[vu % len(ctx.accounts)] for vu in range(ctx.concurrency)]


def _pool_per_user(ctx: SetupContext) -> int:
    """Tokens each virtual user of a revocation scenario is given in setup: ``revoke_rate x window x 1.25`` shared."""
    return max(1, math.ceil(ctx.revoke_rate * ctx.window * _REVOKE_POOL_MARGIN / ctx.concurrency))


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


def _active(body: bytes) -> str | None:
    """An introspection answer is a success only if it says ``"active": true``."""
    data = json_object(body)
    return None if data is not None and data.get("active") is True else f"not active: {body[:200]!r}"


@scenario("introspection")
async def introspection(ctx: SetupContext) -> Plan:
    """``POST /oauth2/introspect`` of a client_credentials access token, authenticated as the token's own client."""
    wanted = [(account, _TOKENS_PER_CLIENT) for account in ctx.accounts]
    issued = await ctx.client_tokens(wanted, label="[introspection] setup: issuing access tokens")
    requests = tuple(
        build_request(
            ctx.target,
            "POST",
            "/oauth2/introspect",
            {**_FORM, "Authorization": basic_auth(account.client_id, account.client_secret)},
            form({"token": tokens[round_]}),
        )
        for round_ in range(_TOKENS_PER_CLIENT)  # clients interleaved: neighbouring virtual users differ
        for account, tokens in zip(ctx.accounts, issued, strict=True)
    )
    return Plan(requests, status=200, check=_active)


@scenario("refresh")
async def refresh(ctx: SetupContext) -> Plan:
    """``POST /oauth2/token`` with the refresh_token grant; each virtual user rotates its own login's chain."""
    accounts = _virtual_users(ctx)
    tokens = await ctx.refresh_logins(accounts, label="[refresh] setup: one password login per virtual user")
    sessions = tuple(
        RefreshChain(ctx.target, account.email, account.password, token)
        for account, token in zip(accounts, tokens, strict=True)
    )
    return Plan((), sessions=sessions)


@scenario("v1_read")
async def v1_read(ctx: SetupContext) -> Plan:
    """``GET /v1/projects/{id}`` with a project client's bearer access token (full validation on every call)."""
    wanted = [(account, _TOKENS_PER_CLIENT) for account in ctx.accounts]
    issued = await ctx.client_tokens(wanted, label="[v1_read] setup: issuing access tokens")
    requests = tuple(
        build_request(
            ctx.target, "GET", f"/v1/projects/{account.project_id}", {"Authorization": f"Bearer {tokens[round_]}"}
        )
        for round_ in range(_TOKENS_PER_CLIENT)
        for account, tokens in zip(ctx.accounts, issued, strict=True)
    )
    return Plan(requests, expect_in_body=(b'"id"',), status=200)


@scenario("revoke")
async def revoke(ctx: SetupContext) -> Plan:
    """``POST /oauth2/revoke`` of a fresh client_credentials access token; only the revocation is measured.

    Setup issues a pool of ``revoke_rate x window x 1.25`` tokens, split between the virtual users, and waits until
    the read models have applied them; a virtual user whose share runs out issues further tokens itself, unmeasured
    (reported as helper requests).
    """
    per_vu, accounts = _pool_per_user(ctx), _virtual_users(ctx)
    label = f"[revoke] setup: issuing {per_vu * ctx.concurrency} access tokens to revoke"
    pools = await ctx.client_tokens([(account, per_vu) for account in accounts], label=label)
    await ctx.settled(accounts[0])  # the pool's events applied by the read models before measuring starts
    sessions = tuple(
        RevokeQueue(ctx.target, pool, authorization=basic_auth(account.client_id, account.client_secret))
        for account, pool in zip(accounts, pools, strict=True)
    )
    return Plan((), sessions=sessions)


@scenario("revoke_dashboard")
async def revoke_dashboard(ctx: SetupContext) -> Plan:
    """``POST /oauth2/revoke`` of a fresh dashboard access token by the public client: RFC 7009's general path.

    Setup logs each virtual user in once and rotates that login ``revoke_rate x window x 1.25 / concurrency`` times,
    keeping every rotation's access token (each stays live: rotation uses up the refresh token only), then waits
    until the read models have applied them. Only the revocation is timed.
    """
    per_vu, accounts = _pool_per_user(ctx), _virtual_users(ctx)
    logins = await ctx.refresh_logins(accounts, label="[revoke_dashboard] setup: one password login per virtual user")
    sessions = await _rotated(ctx, logins, per_vu, label=f"[revoke_dashboard] setup: rotating {len(logins)} logins")
    await ctx.settled(accounts[0])
    return Plan((), sessions=tuple(sessions))


async def _rotated(ctx: SetupContext, logins: list[str], rotations: int, *, label: str) -> list[DashboardRevokeQueue]:
    """Rotates each login ``rotations`` times, one connection per login, showing progress; returns each login's
    revocation session, holding its last refresh token and the access tokens its rotations gave.

    Raises:
        SetupError: A rotation was refused or not answered in time.
    """
    done = 0

    async def rotate(refresh: str) -> DashboardRevokeQueue:
        nonlocal done
        connection, session = Connection(ctx.target), DashboardRevokeQueue(ctx.target, [], refresh_token=refresh)
        try:
            for _ in range(rotations):
                async with asyncio.timeout(ctx.timeout):
                    session.tokens.append(await session.fresh(connection))
                done += 1
        except (OSError, asyncio.IncompleteReadError, HttpProtocolError, TimeoutError, SessionStepError) as exc:
            raise SetupError(f"{label}: {type(exc).__name__}: {exc}") from exc
        finally:
            connection.close()
        return session

    total = len(logins) * rotations
    lanes = [asyncio.create_task(rotate(refresh)) for refresh in logins]
    try:
        while not all(lane.done() for lane in lanes):
            await asyncio.wait(lanes, timeout=1.0, return_when=asyncio.FIRST_EXCEPTION)
            if any(lane.done() and lane.exception() for lane in lanes):
                break
            ctx.progress.write(f"\r{label}: {done}/{total} rotations")
            ctx.progress.flush()
        for lane in lanes:
            if lane.done() and lane.exception():
                raise lane.exception()  # the first failure, before asking the others for results
        results = [lane.result() for lane in lanes]
    finally:
        for lane in lanes:
            lane.cancel()
        await asyncio.gather(*lanes, return_exceptions=True)
    ctx.progress.write(f"\r{label}: {done}/{total} rotations\n")
    return results


@scenario("logout")
async def logout(ctx: SetupContext) -> Plan:
    """``POST /oauth2/revoke`` of a dashboard refresh token by the public client: the login's whole family ends.

    Setup logs in ``revoke_rate x window x 1.25`` times (argon2id: tens a second on two cores, so keep the rate
    modest, or pass ``--seed-logins`` to mint them in-process, see ``benchmarks.seed_logins``) and waits until the
    read models have applied the logins. Only the revocation is timed.
    """
    per_vu, accounts = _pool_per_user(ctx), _virtual_users(ctx)
    entries = [account for account in accounts for _ in range(per_vu)]
    if ctx.seed_logins:
        label = f"[logout] setup: {len(entries)} logins"
        logins = await asyncio.to_thread(seed_logins, [a.email for a in entries], progress=ctx.progress, label=label)
    else:
        logins = await ctx.refresh_logins(entries, label=f"[logout] setup: {len(entries)} password logins")
    await ctx.settled(accounts[0])
    return Plan(
        (),
        sessions=tuple(
            LogoutQueue(
                ctx.target, logins[vu * per_vu : (vu + 1) * per_vu], email=account.email, password=account.password
            )
            for vu, account in enumerate(accounts)
        ),
    )


async def _page_plan(ctx: SetupContext, collection: str) -> Plan:
    """Reads of one page of ``/v1/projects/{id}/{collection}`` in the seeded project, as its owner.

    Half the requests read the first page; the other half follow cursors of full pages deeper in the listing
    (keyset pagination far from the start), collected by walking the pages.
    """
    project = await ctx.paged_project(_PAGED_MEMBERS, _PAGED_CLIENTS)
    token = await ctx.fresh_password_tokens(project.owner)  # fresh: dashboard access tokens live 15 minutes
    lifetime = token.get("expires_in")
    if isinstance(lifetime, int | float) and ctx.window + _TOKEN_MARGIN > lifetime:
        raise SetupError(
            f"warm-up + duration ({ctx.window:g} s) must stay {_TOKEN_MARGIN:g} s below the owner's access-token "
            f"lifetime ({lifetime} s)"
        )
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    path = f"/v1/projects/{project.owner.project_id}/{collection}"
    cursors = await ctx.page_cursors(path, headers, limit=_PAGE_LIMIT, wanted=_DEEP_CURSORS)
    first = build_request(ctx.target, "GET", f"{path}?limit={_PAGE_LIMIT}", headers)
    requests = tuple(
        request
        for cursor in cursors
        for request in (
            first,
            build_request(ctx.target, "GET", f"{path}?limit={_PAGE_LIMIT}&cursor={quote(cursor, safe='')}", headers),
        )
    )
    return Plan(requests, expect_in_body=(b'"items"', b'"next_cursor"'), status=200)


@scenario("members_page")
async def members_page(ctx: SetupContext) -> Plan:
    """``GET /v1/projects/{id}/members?limit=50`` of a project with 1,000 members, first and deeper pages."""
    return await _page_plan(ctx, "members")


@scenario("clients_page")
async def clients_page(ctx: SetupContext) -> Plan:
    """``GET /v1/projects/{id}/clients?limit=50`` of a project with 1,000 clients, first and deeper pages."""
    return await _page_plan(ctx, "clients")


@scenario("jwks")
async def jwks(ctx: SetupContext) -> Plan:
    """``GET /.well-known/jwks.json``: no database, no token; the HTTP stack's own ceiling on this machine."""
    return Plan((build_request(ctx.target, "GET", "/.well-known/jwks.json", {}),), expect_in_body=(b'"keys"',))

"""The Litestar application factory."""

import os
from typing import Any

import anyio
import redis.asyncio
from litestar import Litestar, Request, Response, get
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from infrastructure.bootstrap import PROJECTIONS_ELSEWHERE, Container, Endpoints, build
from infrastructure.http import audit, clients, members, oauth, tokens, v1, webhooks, wellknown
from infrastructure.http.errors import EXCEPTION_HANDLERS
from infrastructure.http.gate import ProjectSnapshots, RequestGate, events_table, revoked_table
from infrastructure.http.introspection import FastIntrospection
from infrastructure.http.nul_guard import refuse_nul
from infrastructure.http.query_guard import refuse_repeated_query
from infrastructure.http.revocation_lane import RevocationLane
from infrastructure.rotation_answers import AsyncRedisRotationAnswers
from infrastructure.serving import freeze_startup_heap
from infrastructure.settings import Settings


@get("/healthz", tags=["ops"], sync_to_thread=True)
def healthz(state: State) -> dict[str, Any]:
    """Liveness and readiness: the event store and Redis answer. ``clock_offset_s``: how far this host's clock is
    from the database's, which the process keeps time by (``infrastructure.clock``; positive: the host is behind),
    measured ``clock_measured_s_ago`` seconds ago (more than a minute or two: the measurements fail)."""
    container: Container = state.container
    container.redis.ping()
    age = container.clock.age()
    return {"status": "ok", "position": container.app.recorder.max_notification_id() or 0,
            "clock_offset_s": round(container.clock.offset, 3),
            "clock_measured_s_ago": None if age is None else round(age, 1)}


def create_app(settings: Settings, endpoints: Endpoints, container: Container | None = None) -> Litestar:
    """Builds the ASGI app; the container is built at startup in the serving process unless given."""
    state = State({"container": container, "snapshots": ProjectSnapshots()})

    async def startup(app: Litestar) -> None:
        if app.state.container is None:
            built = await anyio.to_thread.run_sync(lambda: build(settings, endpoints))
            elsewhere = set(os.environ.get(PROJECTIONS_ELSEWHERE, "").split(","))
            built.start_projections([name for name in built.views if name not in elsewhere])
            app.state.container = built
        built = app.state.container
        app.state.gate = RequestGate(endpoints.database_url, lookup_table=built.lookup.table("token_lookup"),
                                     events_table=events_table(built.app), revoked_table=revoked_table(built.app),
                                     max_size=settings.pool_size)
        await app.state.gate.open()
        app.state.async_redis = redis.asyncio.Redis.from_url(endpoints.redis_url, socket_connect_timeout=2,
                                                             socket_timeout=2)
        app.state.fast_introspection = FastIntrospection(built, gate=app.state.gate, redis_client=app.state.async_redis)
        app.state.rotation_answers = AsyncRedisRotationAnswers(app.state.async_redis, prefix=built.namespace)
        freeze_startup_heap()

    async def shutdown(app: Litestar) -> None:
        if app.state.get("gate") is not None:
            await app.state.gate.close()
        if app.state.get("async_redis") is not None:
            await app.state.async_redis.aclose()
        if container is None and app.state.container is not None:
            app.state.container.close()

    openapi = OpenAPIConfig(
        title="keyledger", version="0.1.0", path="/schema",
        components=Components(security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer",
                                                                         bearer_format="JWT")}),
        security=[{"bearer": []}],
    )
    return Litestar(
        route_handlers=[oauth.token, oauth.revoke, oauth.introspect, wellknown.server_metadata,
                        wellknown.resource_metadata, wellknown.jwks,
                        v1.signup, v1.me, v1.change_password, v1.create_project, v1.get_project, clients.list_clients,
                        clients.create_client, clients.get_client, clients.rotate_secret, tokens.list_tokens,
                        # After the GET on the same path: Litestar 2.25 answers a sync DELETE registered before a
                        # sync GET of its path with a 500 (tests/e2e/test_clients.py covers both on one path).
                        tokens.revoke_tokens, tokens.delete_client, members.list_members, members.add_member,
                        members.change_member_role, members.remove_member, webhooks.list_webhooks,
                        webhooks.create_webhook, webhooks.list_deliveries, webhooks.delete_webhook, audit.list_audit,
                        healthz],
        state=state, on_startup=[startup], on_shutdown=[shutdown], exception_handlers=EXCEPTION_HANDLERS,
        before_request=guard_request,
        openapi_config=openapi, request_max_body_size=settings.max_body_bytes, debug=False,
    )


async def guard_request(request: Request[Any, Any, Any]) -> Response[Any] | None:
    """``before_request``: what no handler should see (NUL, a body that is not UTF-8, a repeated scalar query
    parameter) is answered with a 400 before the handler's parameters are parsed."""
    return await refuse_nul(request) or refuse_repeated_query(request)


def served_app(settings: Settings, endpoints: Endpoints, container: Container | None = None) -> RevocationLane:
    """The ASGI app a server runs: the Litestar app behind the revocation lane (``infrastructure.http.
    revocation_lane``), which answers the hottest revocations itself and hands everything else to Litestar."""
    return RevocationLane(create_app(settings, endpoints, container), max_body_bytes=settings.max_body_bytes)


def app_from_env() -> RevocationLane:
    """ASGI factory for ``uvicorn --factory``: each worker process reads the environment the CLI prepared."""
    settings = Settings.from_env(os.environ)
    endpoints = Endpoints(database_url=os.environ["KEYLEDGER_DATABASE_URL"],
                          redis_url=os.environ["KEYLEDGER_REDIS_URL"])
    return served_app(settings, endpoints)

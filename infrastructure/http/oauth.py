"""``POST /oauth2/token`` (RFC 6749 section 3.2)."""

import asyncio
from typing import Any

import anyio
from litestar import Request, Response, post
from litestar.datastructures import State

from application.oauth.errors import InvalidRequest
from application.oauth.grants import TokenRequest
from domain.policy import GrantType
from infrastructure.http.errors import NO_STORE
from infrastructure.http.forms import basic_credentials, parse_form


def token_request(request: Request[Any, Any, Any], body: bytes) -> TokenRequest:
    """Builds a TokenRequest from the form and the client's authentication (Basic or post, never both)."""
    params = parse_form(request.headers.get("content-type", ""), body)
    basic = basic_credentials(request.headers.get("authorization"))
    if "grant_type" not in params:
        raise InvalidRequest("grant_type is required")
    client_id, client_secret = params.get("client_id"), params.get("client_secret")
    if basic is not None:
        if client_secret is not None:
            raise InvalidRequest("use one client authentication method, not two")
        if client_id is not None and client_id != basic[0]:
            raise InvalidRequest("client_id does not match the authenticated client")
        client_id, client_secret = basic
    return TokenRequest(grant_type=params["grant_type"], client_id=client_id, client_secret=client_secret,
                        username=params.get("username"), password=params.get("password"),
                        scope=params.get("scope"))


@post("/oauth2/token", status_code=200, tags=["oauth2"],
      summary="Token endpoint (RFC 6749): password and client_credentials grants")
async def token(request: Request[Any, Any, Any], state: State) -> Response[dict[str, Any]]:
    """Issues tokens. Errors follow RFC 6749 section 5.2; every answer carries ``Cache-Control: no-store``.

    Requests are decided and saved in batches by the group committer (one read of all the batch's clients, one
    transaction for all their TokenIssued events); the response waits, without holding a thread, until that
    transaction is durable.
    """
    container = state.container
    parsed = token_request(request, await request.body())
    if parsed.grant_type == GrantType.PASSWORD:
        # argon2id takes tens of milliseconds: decide in a worker thread, then join the next group commit.
        issued = await anyio.to_thread.run_sync(container.tokens.decide, parsed)
        await asyncio.wrap_future(container.committer.submit(*issued.aggregates))
    else:
        issued = await asyncio.wrap_future(container.committer.submit_request(parsed))
    return Response(issued.response(), headers=NO_STORE)

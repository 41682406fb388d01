"""OAuth endpoints: token (RFC 6749 section 3.2), revocation (RFC 7009), introspection (RFC 7662)."""

from dataclasses import replace
from datetime import datetime
from typing import Any

import anyio
from eventsourcing.persistence import IntegrityError
from litestar import Request, Response, post
from litestar.datastructures import State

from application.oauth.errors import InvalidClient, InvalidGrant, InvalidRequest, OAuthError, TemporarilyUnavailable
from application.oauth.grants import KEY_RING_ATTEMPTS, TokenRequest, key_ring_moving
from application.oauth.revocation import RevocationRequest
from application.oauth.tokens import IssuedTokens
from domain.client import Client, PublicClient
from domain.policy import GrantType
from domain.refusal import REFRESH_TOKEN_CONFLICT
from infrastructure.http.errors import NO_STORE
from infrastructure.http.fast_revocation import revoke_known
from infrastructure.http.forms import client_authentication, parse_form
from infrastructure.http.revocation_lane import REVOCATION_MEDIA_TYPE, TRIED

THREADED_GRANTS = frozenset({GrantType.PASSWORD, GrantType.REFRESH_TOKEN})


def conflict_refusal(grant_type: str) -> OAuthError:
    """The answer to a token request whose save conflicted for good.

    A refresh lost to another request that rotated (or revoked) the same refresh token first: exactly one rotation
    wins. A client_credentials request is decided anew by the group commit while the client or the key ring it was
    decided on keeps changing under it (``REDECISIONS`` times); a password login conflicts on a moved key ring or on
    its account disabled meanwhile (``application.users``), which ``threaded_grant`` decides anew (the second
    refuses the login). For those, nothing was issued and asking again is safe (503, not a refresh token's
    ``invalid_grant``). A rotation whose account or family moved is decided anew too (refused, if its account was
    disabled or its family ended), and gets this only if it lost to another rotation.
    """
    if grant_type == GrantType.REFRESH_TOKEN:
        return InvalidGrant("the refresh token was already used", reason=REFRESH_TOKEN_CONFLICT)
    return TemporarilyUnavailable("the client or the signing keys changed while the token was issued; try again")


def single_header(request: Request[Any, Any, Any], name: str) -> str | None:
    """The value of header ``name``, None when absent. Sent twice, a header that carries the request's parameters
    makes it ambiguous (Litestar's ``get`` would take the first, another reader the last): refused, as RFC 6749
    section 3.1 refuses a repeated parameter."""
    values = request.headers.getall(name, [])
    if len(values) > 1:
        raise InvalidRequest(f"send the {name} header once")
    return values[0] if values else None


def client_credentials(request: Request[Any, Any, Any], params: dict[str, str]) -> tuple[str | None, str | None]:
    """RFC 6749 section 2.3.1: client_secret_basic or client_secret_post, never both."""
    return client_authentication(single_header(request, "authorization"), params)


def form_of(request: Request[Any, Any, Any], body: bytes) -> dict[str, str]:
    """The request's form parameters (``infrastructure.http.forms.parse_form``) under its one Content-Type."""
    return parse_form(single_header(request, "content-type") or "", body)


def source_address(request: Request[Any, Any, Any]) -> str | None:
    """The peer's address, the key of per-address abuse limits. ``X-Forwarded-For`` counts only from the proxies
    listed in ``KEYLEDGER_TRUSTED_PROXIES`` (uvicorn applies it to the peer address before we see it)."""
    return request.client.host if request.client else None


def token_request(request: Request[Any, Any, Any], body: bytes, received_at: datetime | None = None) -> TokenRequest:
    """Builds a TokenRequest from the form and the client's authentication."""
    params = form_of(request, body)
    if "grant_type" not in params:
        raise InvalidRequest("grant_type is required")
    client_id, client_secret = client_credentials(request, params)
    return TokenRequest(grant_type=params["grant_type"], client_id=client_id, client_secret=client_secret,
                        username=params.get("username"), password=params.get("password"),
                        scope=params.get("scope"), refresh_token=params.get("refresh_token"),
                        source=source_address(request), user_agent=request.headers.get("user-agent"),
                        received_at=received_at)


@post("/oauth2/token", status_code=200, tags=["oauth2"],
      summary="Token endpoint (RFC 6749): password, client_credentials and refresh_token grants")
async def token(request: Request[Any, Any, Any], state: State) -> Response[dict[str, Any]]:
    """Issues tokens. Errors follow RFC 6749 section 5.2; every answer carries ``Cache-Control: no-store``.

    client_credentials requests are decided and saved in batches by the group committer (one read of all the
    batch's clients, one transaction for all their TokenIssued events). Password and refresh requests are decided
    in a worker thread (argon2id; reuse detection) and join the next group commit. The response waits, without
    holding a thread, until that transaction is durable.
    """
    container = state.container
    # As early as the handler can (the NUL guard has read the body already): a concurrent refresh is told from a
    # replay by it.
    received_at = container.tokens.clock.now()
    parsed = token_request(request, await request.body(), received_at)
    try:
        if parsed.grant_type in THREADED_GRANTS:
            issued = await threaded_grant(container, parsed)
            if issued.rotated is not None:  # on the loop, right before the answer (TokenEndpoint.answered's record)
                await state.rotation_answers.answered(issued.rotated, container.tokens.clock.now())
        else:
            issued = await container.committer.decided(parsed)
    except IntegrityError:
        error = conflict_refusal(parsed.grant_type)
        if isinstance(error, InvalidGrant):
            # Off the loop: building the refusal asks Redis (the abuse limits) and may read the client's stream.
            await record_refusal(container, await anyio.to_thread.run_sync(container.tokens.refused, error, parsed))
        raise error from None
    except OAuthError as error:
        await record_refusal(container, error)  # threaded grants: the refusal joins the next group commit
        raise
    return Response(issued.response(), headers=NO_STORE)


async def threaded_grant(container: Any, parsed: TokenRequest) -> IssuedTokens:
    """Decides a password or refresh request in a worker thread and saves its tokens with the next group commit.

    Tokens whose guard moved before they were saved are not saved: signed on a key ring that moved (their key may
    have been revoked: an emergency rotation), of an account disabled meanwhile, of a family that ended meanwhile.
    The request is decided again on the streams as they are now (``decided_before``), as ``TokenEndpoint.handle``
    does.
    """
    tokens = container.tokens
    for _ in range(KEY_RING_ATTEMPTS):
        issued = await anyio.to_thread.run_sync(tokens.decide, parsed)
        try:
            await container.committer.saved(*issued.aggregates, guards=issued.guards)
        except IntegrityError:
            if not await anyio.to_thread.run_sync(tokens.signed_on_stale_keys, issued):
                raise
            parsed = replace(parsed, decided_before=True)
            continue
        return issued
    raise key_ring_moving()


async def record_refusal(container: Any, error: OAuthError) -> None:
    """Saves a refusal's TokenRequestRefused before the refusal is answered (a no-op when already saved: the
    group committer saves the refusals of the requests it decides, and clears nothing, so it is saved once)."""
    aggregates = [a for a in error.aggregates if getattr(a, "pending_events", None)]
    if aggregates:
        await container.committer.saved(*aggregates)


def authenticated_client(state: State, request: Request[Any, Any, Any],
                         params: dict[str, str]) -> Client | PublicClient:
    """Authenticates the calling client as the token endpoint does."""
    client_id, client_secret = client_credentials(request, params)
    return state.container.tokens.authenticate_client(
        TokenRequest(grant_type="", client_id=client_id, client_secret=client_secret, source=source_address(request)))


@post("/oauth2/revoke", status_code=200, tags=["oauth2"], summary="Token revocation (RFC 7009)")
async def revoke(request: Request[Any, Any, Any], body: bytes, state: State) -> Response[bytes]:
    """Revokes an access or refresh token issued to the calling client (a refresh token takes its family).

    Answers 200 once every API process would refuse the token; 200 too for unknown or already revoked tokens
    (RFC 7009 section 2.2). ``token_type_hint`` is accepted and not trusted. A client whose secret this process
    verified before revoking its own client_credentials token, or the dashboard revoking one of its access tokens
    (the presented string's keyed hash must be the one recorded at issuance) or ending a login, is answered on the
    event loop with the group commit (``infrastructure.http.fast_revocation``);
    otherwise such a client is authenticated without a thread (``infrastructure.http.introspection``) and the
    token decided on its stream in a worker thread.
    """
    params = form_of(request, body)
    client_id, client_secret = client_credentials(request, params)
    source = source_address(request)
    tried = request.scope.get(TRIED, False)  # type: ignore[call-overload]
    if tried or not await revoke_known(state.fast_introspection, state.container, (client_id, client_secret),
                                       params.get("token"), source):
        known = await state.fast_introspection.authenticate(client_id, client_secret, source)
        await anyio.to_thread.run_sync(_revoke, request, params, state, known)
    # An empty body: section 2.2 says the client ignores it, and ``null`` would surprise a strict client. Typed as
    # text, which may be empty, not as JSON, which may not.
    return Response(b"", status_code=200, headers=NO_STORE, media_type=REVOCATION_MEDIA_TYPE)


def _revoke(request: Request[Any, Any, Any], params: dict[str, str], state: State, known: Client | None) -> None:
    client = known or authenticated_client(state, request, params)
    state.container.revocation.handle(client, RevocationRequest(token=params.get("token"),
                                                                token_type_hint=params.get("token_type_hint")))
    _, secret = client_credentials(request, params)
    if known is None and isinstance(client, Client) and secret:
        state.fast_introspection.remember(client, secret)


@post("/oauth2/introspect", status_code=200, tags=["oauth2"], summary="Token introspection (RFC 7662)")
async def introspect(request: Request[Any, Any, Any], body: bytes, state: State) -> Response[dict[str, Any]]:
    """Tells a project's client whether a token of its own project is active (RFC 7662 section 2.2).

    A client whose secret this process verified before is answered on the event loop (see
    ``infrastructure.http.introspection``); anything else, in a worker thread, by the general path.
    """
    params = form_of(request, body)
    client_id, client_secret = client_credentials(request, params)
    fast = state.fast_introspection
    answer = await fast.answer(client_id, client_secret, params.get("token"), source_address(request))
    if answer is None:
        answer = await anyio.to_thread.run_sync(_introspect, request, params, state)
    return Response(answer, headers=NO_STORE)


def _introspect(request: Request[Any, Any, Any], params: dict[str, str], state: State) -> dict[str, Any]:
    """The general path: counted client authentication, then the token decided on its own stream."""
    client = authenticated_client(state, request, params)
    if not isinstance(client, Client):
        raise InvalidClient("introspection needs a confidential client")
    if "token" not in params:
        raise InvalidRequest("the token parameter is required")
    answer = state.container.introspection.handle(client, params["token"])
    _, secret = client_credentials(request, params)
    if secret:
        state.fast_introspection.remember(client, secret)
    return answer

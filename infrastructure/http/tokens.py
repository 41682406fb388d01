"""The management API's token routes: listing, bulk revocation, and deleting a client.

Every route takes a project: the caller's right in it is decided on the project's stream per request
(``authorize``), and every query and command is confined to that project.
"""

from datetime import datetime
from enum import StrEnum
from typing import Annotated
from uuid import UUID

from litestar import Response, delete, get, post
from litestar.datastructures import State
from litestar.params import Parameter

from application.authz import Principal, authorize
from application.token_admin import DeleteClient, RevokeTokens
from infrastructure.http.auth import AUTH
from infrastructure.http.errors import NO_STORE
from infrastructure.http.paging import DEFAULT_PAGE, MAX_PAGE, decode_uuid_cursor, encode_cursor
from infrastructure.http.schemas import ClientIdField, RevokedOut, RevokeTokensBody, TokenOut, TokenPage
from projections.token_lookup import TokenQuery, TokenRow


class TokenStatus(StrEnum):
    """A token's status as listings show it (``expired`` from the expiry instant, swept or not)."""

    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"
    USED = "used"


def token_out(row: TokenRow, now: datetime) -> TokenOut:
    """A token row as the API shows it."""

    def text(value: object) -> str | None:
        return None if value is None else str(value)

    row = row.as_of(now)
    return TokenOut(token_id=str(row.token_id), kind=row.kind, client_id=row.client_id, scope=row.scope,
                    grant_type=row.grant_type, issued_at=row.issued_at.isoformat(),
                    expires_at=row.expires_at.isoformat(), status=row.status,
                    project_id=text(row.project_id), user_id=text(row.user_id), family_id=text(row.family_id),
                    parent_id=text(row.parent_id), ended_at=row.ended_at.isoformat() if row.ended_at else None,
                    ended_reason=row.ended_reason, ended_by=row.ended_by)


@get("/v1/projects/{project_id:uuid}/tokens", sync_to_thread=True, dependencies=AUTH, tags=["tokens"])
def list_tokens(
    project_id: UUID, caller: Principal, state: State, *,
    status: TokenStatus | None = None,
    client_id: Annotated[str | None, Parameter(max_length=200)] = None,
    user_id: UUID | None = None,
    cursor: Annotated[str | None, Parameter(max_length=200)] = None,
    limit: Annotated[int, Parameter(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
) -> TokenPage:
    """The project's tokens, newest first: metadata only, never a token's value.

    The page reflects every token event acknowledged before the request (the model is brought up to the store's
    head first).
    """
    authorize(state.container.app, caller, project_id, "tokens:read")
    container = state.container
    container.lookup.wait_for(container.app.recorder.max_notification_id() or 0)
    now = container.tokens.clock.now()
    listing = ("tokens", project_id, status, client_id, user_id)
    query = TokenQuery(project_id=project_id, now=now, limit=limit + 1, status=status, client_id=client_id,
                       user_id=user_id, after=decode_uuid_cursor(cursor, listing=listing) if cursor else None)
    rows = container.lookup.page(query)
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1].issued_at, str(rows[-1].token_id), listing=listing) if more else None
    return TokenPage(items=[token_out(r, now) for r in rows], next_cursor=next_cursor)


@post("/v1/projects/{project_id:uuid}/tokens/revoke", sync_to_thread=True, status_code=200, dependencies=AUTH,
      tags=["tokens"])
def revoke_tokens(project_id: UUID, data: RevokeTokensBody, caller: Principal, state: State) -> Response[RevokedOut]:
    """Revokes every live token of the project matching one of ``token_id``, ``client_id``, ``user_id``.

    One command, one transaction; the answer comes once every API process refuses the revoked tokens.
    """
    authorize(state.container.app, caller, project_id, "tokens:revoke")
    command = RevokeTokens(project_id=project_id, actor=caller.actor, token_id=data.token_id,
                           client_id=data.client_id, user_id=data.user_id)
    revoked = state.container.token_admin.revoke_tokens(command)
    return Response(RevokedOut(revoked=revoked), headers=NO_STORE)


@delete("/v1/projects/{project_id:uuid}/clients/{client_id:str}", sync_to_thread=True, status_code=200,
        dependencies=AUTH, tags=["clients"])
def delete_client(project_id: UUID, client_id: Annotated[ClientIdField, Parameter()], caller: Principal,
                  state: State) -> Response[RevokedOut]:
    """Revokes the client (its secrets stop working) and every live token it was issued."""
    granted = authorize(state.container.app, caller, project_id, "clients:write")
    revoked = state.container.token_admin.delete_client(DeleteClient(project_id=project_id, client_id=client_id,
                                                                      actor=caller.actor,
                                                                      caller_permissions=granted.permissions))
    return Response(RevokedOut(revoked=revoked), headers=NO_STORE)

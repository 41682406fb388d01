"""The management API's client routes: a project's API keys.

Creating and rotating decide on the client's own stream and show the new secret once; a save that lost to a
concurrent change of the project is decided again on the caller's fresh rights (``Clients.on_fresh_rights``).
Listings come from the clients read model (brought up to the store's head first) and show only the secret's prefix
and last four characters. Deleting a client is in ``tokens.py`` with the other revocations.
"""

from datetime import datetime
from typing import Annotated
from uuid import UUID

from litestar import Response, get, post
from litestar.datastructures import State
from litestar.params import Parameter

from application.accounts import NewClient
from application.authz import Authorization, Principal, authorize
from application.clients import AddClient, RotatedSecret, RotateSecret
from domain.client import Client
from domain.policy import LifetimePolicy
from infrastructure.http.auth import AUTH
from infrastructure.http.errors import NO_STORE
from infrastructure.http.paging import DEFAULT_PAGE, MAX_PAGE, decode_cursor, encode_cursor
from infrastructure.http.schemas import ClientBody, ClientIdField, ClientOut, ClientPage, RotateSecretBody
from projections.clients import ClientRow


def iso(value: datetime | None) -> str | None:
    """A timestamp as ISO 8601, or None."""
    return value.isoformat() if value is not None else None


def client_out(client: Client, lifetimes: LifetimePolicy, secret: str | None = None) -> ClientOut:
    """A client from its own stream, with its effective lifetimes; the secret only when just made."""
    return ClientOut(client_id=client.client_id, project_id=str(client.project_id), name=client.name,
                     scope=client.scope, grant_types=client.grant_types.split(), secret_hint=client.secret_hint,
                     secret_expires_at=client.secret_expires_at.isoformat(),
                     access_token_ttl=lifetimes.client_access_ttl(client.access_token_ttl),
                     created_at=client.created_on.isoformat(), status="revoked" if client.revoked else "active",
                     previous_secret_expires_at=iso(client.previous_secret_expires_at), client_secret=secret)


def row_out(row: ClientRow, lifetimes: LifetimePolicy) -> ClientOut:
    """A client from the listing's read model."""
    return ClientOut(client_id=row.client_id, project_id=str(row.project_id), name=row.name, scope=row.scope,
                     grant_types=["client_credentials"], secret_hint=row.secret_hint,
                     secret_expires_at=row.secret_expires_at.isoformat(),
                     access_token_ttl=lifetimes.client_access_ttl(row.access_token_ttl),
                     created_at=row.created_at.isoformat(), status="revoked" if row.revoked_at else "active",
                     secret_rotated_at=iso(row.secret_rotated_at), last_used_at=iso(row.last_used_at),
                     revoked_at=iso(row.revoked_at))


@get("/v1/projects/{project_id:uuid}/clients", sync_to_thread=True, dependencies=AUTH, tags=["clients"])
def list_clients(project_id: UUID, caller: Principal, state: State, *,
                 cursor: Annotated[str | None, Parameter(max_length=200)] = None,
                 limit: Annotated[int, Parameter(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE) -> ClientPage:
    """The project's clients, newest first, with ``last_used_at`` (issue time of the client's newest token)."""
    container = state.container
    authorize(container.app, caller, project_id, "clients:read")
    view, head = container.clients_view, container.app.recorder.max_notification_id() or 0
    view.wait_for(head)
    container.lookup.wait_for(head)  # last_used_at comes from the token lookup model
    listing = ("clients", project_id)
    rows = view.page(project_id, limit=limit + 1, after=decode_cursor(cursor, listing=listing) if cursor else None)
    more, rows = len(rows) > limit, rows[:limit]
    lifetimes = container.settings.lifetimes
    return ClientPage(items=[row_out(r, lifetimes) for r in rows], next_cursor=encode_cursor(
        rows[-1].created_at, rows[-1].client_id, listing=listing) if more else None)


@post("/v1/projects/{project_id:uuid}/clients", sync_to_thread=True, status_code=201, dependencies=AUTH,
      tags=["clients"])
def create_client(project_id: UUID, data: ClientBody, caller: Principal, state: State) -> Response[ClientOut]:
    """Creates an API key; its secret is in this answer and never again. Its scope may not exceed the caller's."""
    container = state.container

    def add(granted: Authorization) -> NewClient:
        return container.clients.add(AddClient(project_id=project_id, name=data.name, actor=caller.actor,
                                              creator_permissions=granted.permissions, scope=data.scope,
                                              access_token_ttl=data.access_token_ttl, secret_ttl=data.secret_ttl,
                                              decided_on=granted.version))

    new = container.clients.on_fresh_rights(caller, project_id, add)
    return Response(client_out(new.client, container.settings.lifetimes, new.client_secret), status_code=201,
                    headers=NO_STORE)


@get("/v1/projects/{project_id:uuid}/clients/{client_id:str}", sync_to_thread=True, dependencies=AUTH,
     tags=["clients"])
def get_client(project_id: UUID, client_id: Annotated[ClientIdField, Parameter()], caller: Principal,
               state: State) -> ClientOut:
    """One live client of the project, read from its own stream."""
    container = state.container
    authorize(container.app, caller, project_id, "clients:read")
    return client_out(container.clients.live_client(project_id, client_id), container.settings.lifetimes)


@post("/v1/projects/{project_id:uuid}/clients/{client_id:str}/rotate-secret", sync_to_thread=True,
      status_code=200, dependencies=AUTH, tags=["clients"])
def rotate_secret(project_id: UUID, client_id: Annotated[ClientIdField, Parameter()], caller: Principal, state: State,
                  data: RotateSecretBody | None = None) -> Response[ClientOut]:
    """Issues a new secret (shown once); the old one keeps working for ``grace_period`` seconds and never after. The
    client's scope may not exceed the caller's: its new secret would hand the caller that scope."""
    container = state.container

    def rotate(granted: Authorization) -> RotatedSecret:
        return container.clients.rotate(RotateSecret(project_id=project_id, client_id=client_id, actor=caller.actor,
                                                     caller_permissions=granted.permissions,
                                                     grace_period=data.grace_period if data else 0,
                                                     decided_on=granted.version))

    rotated = container.clients.on_fresh_rights(caller, project_id, rotate)
    return Response(client_out(rotated.client, container.settings.lifetimes, rotated.client_secret),
                    headers=NO_STORE)

"""The management API's webhook routes: register, list and remove endpoints, and read their deliveries.

Commands decide on the project's stream (``application.webhooks``); listings come from the webhooks read model once
it shows every change acknowledged before (read-your-writes), confined to the project by row-level security. A
webhook's secret is in the answer that created it and never again.
"""

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from litestar import Response, delete, get, post
from litestar.datastructures import State
from litestar.params import Parameter

from application.authz import Principal, authorize
from application.webhooks import MANAGE_PERMISSION, READ_PERMISSION, ConfigureWebhook, RemoveWebhook
from domain.errors import NotFound
from domain.webhooks import url_hint
from infrastructure.http.auth import AUTH
from infrastructure.http.errors import NO_STORE
from infrastructure.http.paging import DEFAULT_PAGE, MAX_PAGE, decode_uuid_cursor, encode_cursor
from infrastructure.http.webhook_schemas import (
    AttemptOut,
    DeliveryOut,
    DeliveryPage,
    WebhookBody,
    WebhookOut,
    WebhookPage,
)
from projections.webhooks import WebhookRow

WEBHOOKS = "/v1/projects/{project_id:uuid}/webhooks"
WEBHOOK = WEBHOOKS + "/{webhook_id:uuid}"
Cursor = Annotated[str | None, Parameter(max_length=200)]
Limit = Annotated[int, Parameter(ge=1, le=MAX_PAGE)]


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if isinstance(value, datetime) else str(value)


def webhook_out(row: WebhookRow, *, whole_url: bool) -> WebhookOut:
    """A webhook from the read model (never its secret); its URL whole only for those who may manage webhooks
    (``domain.webhooks.url_hint``)."""
    return WebhookOut(id=str(row.webhook_id), project_id=str(row.project_id),
                      url=row.url if whole_url else url_hint(row.url),
                      event_types=list(row.event_types), secret_hint=row.secret_hint,
                      created_at=row.created_at.isoformat())


def delivery_out(row: dict[str, Any]) -> DeliveryOut:
    """A notification with its attempts."""
    attempts = [AttemptOut(attempt=a["attempt"], attempted_at=str(a["attempted_at"]), status_code=a["status_code"],
                           error=a["error"], duration_ms=float(a["duration_ms"]), response_body=a["response_body"])
                for a in row["attempt_list"]]
    pending = row["status"] == "pending"
    return DeliveryOut(id=str(row["id"]), type=row["type"], status=row["status"],
                       created_at=_iso(row["created_at"]) or "",
                       next_attempt_at=_iso(row["next_attempt_at"]) if pending else None,
                       delivered_at=_iso(row["delivered_at"]), attempts=attempts)


def _caught_up(state: State) -> Any:
    container = state.container
    view = container.webhooks_view
    view.wait_for(container.app.recorder.max_notification_id() or 0)
    return view


@get(WEBHOOKS, sync_to_thread=True, dependencies=AUTH, tags=["webhooks"])
def list_webhooks(project_id: UUID, caller: Principal, state: State, *, cursor: Cursor = None,
                  limit: Limit = DEFAULT_PAGE) -> WebhookPage:
    """The project's webhooks, oldest first (``project:read``); a URL is whole for callers who may manage webhooks
    (``project:write``), an origin and ``/...`` for the others: a hook URL may carry the receiver's credential."""
    granted = authorize(state.container.app, caller, project_id, READ_PERMISSION)
    whole_url = MANAGE_PERMISSION in granted.permissions
    view = _caught_up(state)
    listing = ("webhooks", project_id)
    rows = view.page(project_id, limit=limit + 1,
                     after=decode_uuid_cursor(cursor, listing=listing) if cursor else None)
    more, rows = len(rows) > limit, rows[:limit]
    return WebhookPage(items=[webhook_out(r, whole_url=whole_url) for r in rows], next_cursor=encode_cursor(
        rows[-1].created_at, str(rows[-1].webhook_id), listing=listing) if more else None)


@post(WEBHOOKS, sync_to_thread=True, status_code=201, dependencies=AUTH, tags=["webhooks"])
def create_webhook(project_id: UUID, data: WebhookBody, caller: Principal, state: State) -> Response[WebhookOut]:
    """Registers a webhook (``project:write``: owners and admins); its signing secret is in this answer only.

    The URL must be https and must not name a loopback, private, link-local or reserved address (checked again
    after DNS resolution at every delivery), unless the server allows private targets.
    """
    done = state.container.webhooks.configure(ConfigureWebhook(project_id=project_id, url=data.url,
                                                               event_types=tuple(data.event_types), caller=caller))
    body = WebhookOut(id=str(done.webhook_id), project_id=str(project_id), url=done.url,
                      event_types=list(done.event_types), secret_hint=done.secret_hint, secret=done.secret)
    return Response(body, status_code=201, headers=NO_STORE)


@get(WEBHOOK + "/deliveries", sync_to_thread=True, dependencies=AUTH, tags=["webhooks"])
def list_deliveries(project_id: UUID, webhook_id: UUID, caller: Principal, state: State, *, cursor: Cursor = None,
                    limit: Limit = DEFAULT_PAGE) -> DeliveryPage:
    """The webhook's notifications, newest first, with every attempt (``project:read``)."""
    authorize(state.container.app, caller, project_id, READ_PERMISSION)
    view = _caught_up(state)
    if not view.exists(project_id, webhook_id):
        raise NotFound("webhook")
    listing = ("deliveries", project_id, webhook_id)
    rows = view.deliveries(project_id, webhook_id, limit=limit + 1,
                           after=decode_uuid_cursor(cursor, listing=listing) if cursor else None)
    more, rows = len(rows) > limit, rows[:limit]
    return DeliveryPage(items=[delivery_out(r) for r in rows], next_cursor=encode_cursor(
        rows[-1]["created_at"], str(rows[-1]["id"]), listing=listing) if more else None)


@delete(WEBHOOK, sync_to_thread=True, status_code=204, dependencies=AUTH, tags=["webhooks"])
def delete_webhook(project_id: UUID, webhook_id: UUID, caller: Principal, state: State) -> None:
    """Removes a webhook (``project:write``); notifications not yet delivered to it are dropped. 204."""
    state.container.webhooks.remove(RemoveWebhook(project_id=project_id, webhook_id=webhook_id, caller=caller))

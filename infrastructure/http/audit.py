"""``GET /v1/projects/{project_id}/audit``: the project's audit ledger, as pages or as one streamed export.

Owners, admins and auditors hold ``audit:read``. A page (JSON, ``limit`` and ``cursor``) or, with
``Accept: application/x-ndjson`` or ``Accept: text/csv``, the whole filtered range streamed from a server-side
cursor, in position order. Either reflects every event acknowledged before the request (read-your-writes).
"""

import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.params import Parameter
from litestar.response import Stream

from application.authz import Principal, authorize
from domain.errors import InvalidArgument
from infrastructure.http.auth import AUTH
from infrastructure.http.paging import DEFAULT_PAGE, MAX_PAGE, decode_cursor, encode_cursor
from projections.audit_entry import api_time
from projections.audit_query import AuditQuery

NDJSON = "application/x-ndjson"
CSV = "text/csv"
MAX_TYPES = 32
_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9]{0,63}")


def decode_position_cursor(cursor: str, *, listing: Sequence[object]) -> int:
    """Reads an audit cursor (the last entry's time and position) made for ``listing``.

    Raises:
        InvalidArgument: the cursor was not made by this server, or was made for another listing.
    """
    _, key = decode_cursor(cursor, listing=listing)
    if not key.isdigit() or len(key) > 19:
        raise InvalidArgument("the cursor is invalid")
    return int(key)


def checked_types(types: list[str] | None) -> tuple[str, ...]:
    """The ``type`` filters, each an event type name."""
    values = tuple(types or ())
    if len(values) > MAX_TYPES or not all(_TYPE.fullmatch(t) for t in values):
        raise InvalidArgument(f"type must name event types (at most {MAX_TYPES})")
    return values


def aware(value: datetime | None) -> datetime | None:
    """A filter instant; one given without an offset is taken as UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def wanted_format(accept: str) -> str | None:
    """The export format the ``Accept`` header asks for, or None for a JSON page."""
    media = {part.split(";", 1)[0].strip().lower() for part in accept.split(",")}
    if NDJSON in media:
        return NDJSON
    return CSV if CSV in media else None


def entry_out(row: dict[str, Any]) -> dict[str, Any]:
    """An entry as the API shows it (the NDJSON export's lines have the same shape)."""

    def text(value: object) -> str | None:
        return None if value is None else str(value)

    return {"position": row["position"], "type": row["type"], "occurred_at": api_time(row["occurred_at"]),
            "project_id": text(row["project_id"]), "actor": {"kind": row["actor_kind"], "id": row["actor_id"]},
            "token_id": text(row["token_id"]), "client_id": row["client_id"], "user_id": text(row["user_id"]),
            "stream_id": text(row["stream_id"]), "stream_version": row["stream_version"], "data": row["data"],
            "hash": row["hash"]}


def ndjson(lines: Iterator[list[str]]) -> Iterator[bytes]:
    """Batches of JSON lines as NDJSON chunks."""
    for batch in lines:
        yield ("\n".join(batch) + "\n").encode()


@get("/v1/projects/{project_id:uuid}/audit", sync_to_thread=True, dependencies=AUTH, tags=["audit"])
def list_audit(
    project_id: UUID, caller: Principal, state: State, request: Request[Any, Any, Any], *,
    token_id: UUID | None = None,
    client_id: Annotated[str | None, Parameter(max_length=200, pattern=r"^[\x21-\x7e]+$")] = None,
    user_id: UUID | None = None,
    types: Annotated[list[str] | None, Parameter(query="type")] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: Annotated[str | None, Parameter(max_length=200)] = None,
    limit: Annotated[int, Parameter(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
) -> Response[Any]:
    """The project's audit entries in position order: every event of the project, refusals included, each with
    its actor, the token, client and user it concerns, its details (never a secret) and its hash in the project's
    chain. Filters combine; ``type`` repeats (any of them matches); ``since`` is inclusive, ``until`` exclusive.
    """
    container = state.container
    authorize(container.app, caller, project_id, "audit:read")
    checked = checked_types(types)
    listing = ("audit", project_id, token_id, client_id, user_id, " ".join(checked), aware(since), aware(until))
    query = AuditQuery(project_id=project_id, limit=limit + 1, token_id=token_id, client_id=client_id,
                       user_id=user_id, types=checked, since=aware(since), until=aware(until),
                       after=decode_position_cursor(cursor, listing=listing) if cursor else None)
    if query.since is not None and query.until is not None and query.since >= query.until:
        raise InvalidArgument("since must be before until")
    view = container.audit
    view.wait_for(container.app.recorder.max_notification_id() or 0)
    export = wanted_format(", ".join(request.headers.getall("accept", [])))
    if export == NDJSON:
        return Stream(ndjson(view.lines(query, as_tenant=True)), media_type=NDJSON)
    if export == CSV:
        return Stream(view.csv(query, as_tenant=True), media_type=f"{CSV}; charset=utf-8")
    rows = view.page(query)
    more, rows = len(rows) > limit, rows[:limit]
    next_cursor = encode_cursor(rows[-1]["occurred_at"], str(rows[-1]["position"]), listing=listing) if more else None
    return Response({"items": [entry_out(r) for r in rows], "next_cursor": next_cursor})

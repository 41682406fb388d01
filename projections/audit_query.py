"""Filters of the audit ledger: one query shape for the API's pages, its exports and the operator's CLI."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.sql import SQL, Composable

COLUMNS = SQL("position, chain, project_id, type, occurred_at, actor_kind, actor_id, token_id, client_id, user_id, "
              "stream_id, stream_version, data, hash, reach")

ALL_PROJECTS = "all"
PLATFORM = "platform"


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Entries of one project (or, for the operator, of ``scope``: every project, or the platform's own), in
    position order, after position ``after`` when given.

    Attributes:
        project_id: the project; None with ``scope`` for the operator's views.
        scope: ``ALL_PROJECTS`` or ``PLATFORM`` when ``project_id`` is None.
        types: event types, any of which matches (empty: every type).
        since: entries that occurred at or after this instant.
        start: a position no entry matching ``since`` precedes (``AuditView.bounded`` finds it): a plain bound the
            index scan starts at.
        until: entries that occurred before this instant.
    """

    project_id: UUID | None
    limit: int = 50
    token_id: UUID | None = None
    client_id: str | None = None
    user_id: UUID | None = None
    types: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    after: int | None = None
    scope: str = ALL_PROJECTS
    start: int | None = None

    def where(self) -> tuple[Composable, dict[str, Any]]:
        """The WHERE clause and its parameters."""
        clauses: list[Composable] = [self._scope()]
        params: dict[str, Any] = {"project_id": self.project_id}
        optional = (("token_id", self.token_id, "token_id = %(token_id)s"),
                    ("client_id", self.client_id, "client_id = %(client_id)s"),
                    ("user_id", self.user_id, "user_id = %(user_id)s"),
                    ("types", list(self.types) or None, "type = ANY(%(types)s)"),
                    ("since", self.since, "occurred_at >= %(since)s"),
                    ("until", self.until, "occurred_at < %(until)s"),
                    ("after", self.after, "position > %(after)s"),
                    ("start", self.start, "position >= %(start)s"))
        for name, value, clause in optional:
            if value is not None:
                clauses.append(SQL(clause))  # type: ignore[arg-type]
                params[name] = value
        return SQL(" AND ").join(clauses), params

    def _scope(self) -> Composable:
        if self.project_id is not None:
            return SQL("project_id = %(project_id)s")
        return SQL("project_id IS NULL") if self.scope == PLATFORM else SQL("TRUE")

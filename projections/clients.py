"""Clients read model: a project's API keys for listings, with ``last_used_at`` derived from the token events.

``last_used_at`` is the issue time of the client's newest token: no event per use is recorded, and a batch of
token events costs one update per client, not one per token.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composable

from domain.client import Client
from domain.token import Token
from projections.base import ReadModel

COLUMNS = ("project_id", "client_id", "name", "scope", "secret_hint", "secret_expires_at", "access_token_ttl",
           "created_at", "secret_rotated_at", "revoked_at", "last_used_at")


@dataclass(frozen=True, slots=True)
class ClientRow:
    """A client's listing entry (never its secret or the secret's hash)."""

    project_id: UUID
    client_id: str
    name: str
    scope: str
    secret_hint: str
    secret_expires_at: datetime
    access_token_ttl: int | None
    created_at: datetime
    secret_rotated_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class ClientsView(ReadModel):
    """``client_view``: one row per client, keyed by project."""

    name = "clients"
    tables = ("client_view",)
    tenant_tables = ("client_view",)
    topics = frozenset(get_topic(cls) for cls in (Client.ClientCreated, Client.ClientSecretRotated,
                                                  Client.ClientRevoked, Token.TokenIssued))

    def create_statements(self) -> list[Composable]:
        """The table and the index of its page query."""
        table = self.table("client_view")
        return [
            SQL("CREATE TABLE IF NOT EXISTS {} (project_id uuid NOT NULL, client_id text NOT NULL, id uuid NOT NULL, "
                "name text NOT NULL, "
                "scope text NOT NULL, secret_hint text NOT NULL, secret_expires_at timestamptz NOT NULL, "
                "access_token_ttl integer, created_at timestamptz NOT NULL, secret_rotated_at timestamptz, "
                "revoked_at timestamptz, last_used_at timestamptz, PRIMARY KEY (project_id, client_id))")
            .format(table),
            SQL("CREATE UNIQUE INDEX IF NOT EXISTS client_view_page_idx ON {} (project_id, created_at, client_id)")
            .format(table),
        ]

    def apply_events(self, curs: Cursor[DictRow], events: Sequence[Any]) -> None:
        """Applies client events one by one and the batch's token events as one update per client."""
        last_used: dict[tuple[UUID, str], datetime] = {}
        for event in events:
            if isinstance(event, Token.TokenIssued):
                if event.project_id is not None:
                    key = (event.project_id, event.client_id)
                    last_used[key] = max(event.issued_at, last_used.get(key, event.issued_at))
            else:
                self.apply(curs, event)
        for (project_id, client_id), used_at in last_used.items():
            curs.execute(SQL("UPDATE {} SET last_used_at = GREATEST(last_used_at, %s) WHERE project_id = %s "
                             "AND client_id = %s").format(self.table("client_view")), (used_at, project_id, client_id))

    def apply(self, curs: Cursor[DictRow], event: Any) -> None:
        """Applies one client event."""
        table = self.table("client_view")
        if isinstance(event, Client.ClientCreated):
            curs.execute(SQL("INSERT INTO {} VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, NULL, NULL, NULL) "
                             "ON CONFLICT DO NOTHING").format(table),
                         (event.project_id, event.client_id, event.originator_id, event.name, event.scope,
                          event.secret_hint, event.secret_expires_at, event.access_token_ttl, event.timestamp))
        elif isinstance(event, Client.ClientSecretRotated):
            curs.execute(SQL("UPDATE {} SET secret_hint = %s, secret_expires_at = %s, secret_rotated_at = %s "
                             "WHERE project_id = %s AND id = %s").format(table),
                         (event.secret_hint, event.secret_expires_at, event.timestamp, event.project_id,
                          event.originator_id))
        elif isinstance(event, Client.ClientRevoked):
            curs.execute(SQL("UPDATE {} SET revoked_at = %s WHERE project_id = %s AND id = %s").format(table),
                         (event.timestamp, event.project_id, event.originator_id))

    def page(self, project_id: UUID, *, limit: int, after: tuple[datetime, str] | None = None) -> list[ClientRow]:
        """A page of the project's clients, newest first."""
        where = SQL("project_id = %s")
        params: list[Any] = [project_id]
        if after is not None:
            where += SQL(" AND (created_at, client_id) < (%s, %s)")
            params.extend(after)
        query = SQL("SELECT {} FROM {} WHERE ").format(SQL(", ").join(map(SQL, COLUMNS)),
                                                     self.table("client_view"))
        query += where + SQL(" ORDER BY created_at DESC, client_id DESC LIMIT %s")
        return [ClientRow(**row) for row in self.tenant_select(project_id, query, (*params, limit))]

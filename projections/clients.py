"""Clients read model: a project's API keys for listings.

``last_used_at`` is the issue time of the client's newest token: no event per use is recorded; the token lookup
model, which decodes every TokenIssued anyway, keeps it in its ``client_last_used`` table, joined here.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composable

from domain.client import Client
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
                                                  Client.ClientRevoked))

    def create_statements(self) -> list[Composable]:
        """The table, the index of its page query and that of the orphan sweep's."""
        table = self.table("client_view")
        return [
            SQL("CREATE TABLE IF NOT EXISTS {} (project_id uuid NOT NULL, client_id text NOT NULL, id uuid NOT NULL, "
                "name text NOT NULL, "
                "scope text NOT NULL, secret_hint text NOT NULL, secret_expires_at timestamptz NOT NULL, "
                "access_token_ttl integer, created_at timestamptz NOT NULL, secret_rotated_at timestamptz, "
                "revoked_at timestamptz, PRIMARY KEY (project_id, client_id))")
            .format(table),
            SQL("CREATE UNIQUE INDEX IF NOT EXISTS client_view_page_idx ON {} (project_id, created_at, client_id)")
            .format(table),
            # The orphan sweep's entry point (projections.orphaned_tokens): revoked clients only, so its scan grows
            # with deletions, not with every client. A revocation is an update this index sees (not a HOT one):
            # clients are revoked once, rarely.
            SQL("CREATE INDEX IF NOT EXISTS client_view_revoked_idx ON {} (project_id, client_id) "
                "WHERE revoked_at IS NOT NULL").format(table),
        ]

    def apply(self, curs: Cursor[DictRow], event: Any) -> None:
        """Applies one client event."""
        table = self.table("client_view")
        if isinstance(event, Client.ClientCreated):
            curs.execute(SQL("INSERT INTO {} (project_id, client_id, id, name, scope, secret_hint, secret_expires_at, "
                             "access_token_ttl, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
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
        own = SQL(", ").join(SQL("c.{}").format(SQL(c)) for c in COLUMNS if c != "last_used_at")
        query = SQL("SELECT {}, u.last_used_at FROM {} c LEFT JOIN {} u USING (project_id, client_id) WHERE ").format(
            own, self.table("client_view"), self.table("client_last_used"))
        query += where + SQL(" ORDER BY created_at DESC, client_id DESC LIMIT %s")
        return [ClientRow(**row) for row in self.tenant_select(project_id, query, (*params, limit))]

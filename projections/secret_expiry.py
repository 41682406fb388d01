"""Secret expiry read model: each client's secrets that will expire and whose expiry is not recorded yet.

One row per (client, which): ``current`` is the secret in use, ``previous`` the one a rotation replaced, live until
its grace period ends. The secret sweep reads the rows past their instant that are not ``recorded`` yet
(``ClientSecretExpired`` marks them); ``ClientRevoked`` removes a client's rows. Never a secret or its hash.
The webhooks' expiry warnings can read the upcoming instants from here as well.
"""

from datetime import datetime
from typing import Any

from eventsourcing.utils import get_topic
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composable

from domain.client import Client
from projections.base import ReadModel


class SecretExpiryView(ReadModel):
    """``secret_expiry``: secrets pending expiry, by instant."""

    name = "secret_expiry"
    tables = ("secret_expiry",)
    tenant_tables = ("secret_expiry",)
    topics = frozenset(get_topic(cls) for cls in (Client.ClientCreated, Client.ClientSecretRotated,
                                                  Client.ClientSecretExpired, Client.ClientRevoked))

    def create_statements(self) -> list[Composable]:
        """The table (keyed by the client's aggregate id, which every client event carries) and the sweep's index."""
        table = self.table("secret_expiry")
        return [
            SQL("CREATE TABLE IF NOT EXISTS {} (id uuid NOT NULL, which text NOT NULL, client_id text NOT NULL, "
                "project_id uuid NOT NULL, expires_at timestamptz NOT NULL, recorded boolean NOT NULL, "
                "PRIMARY KEY (id, which))").format(table),
            SQL("CREATE INDEX IF NOT EXISTS secret_expiry_due_idx ON {} (expires_at, client_id) WHERE NOT recorded")
            .format(table),
        ]

    def apply(self, curs: Cursor[DictRow], event: Any) -> None:
        """Applies one client event."""
        table = self.table("secret_expiry")
        if isinstance(event, Client.ClientCreated):
            curs.execute(SQL("INSERT INTO {} VALUES (%s, 'current', %s, %s, %s, false) ON CONFLICT DO NOTHING")
                         .format(table), (event.originator_id, event.client_id, event.project_id,
                                          event.secret_expires_at))
        elif isinstance(event, Client.ClientSecretRotated):
            self._rotate(curs, event)
        elif isinstance(event, Client.ClientSecretExpired):
            curs.execute(SQL("UPDATE {} SET recorded = true WHERE id = %s AND which = %s").format(table),
                         (event.originator_id, event.which))
        elif isinstance(event, Client.ClientRevoked):
            curs.execute(SQL("DELETE FROM {} WHERE id = %s").format(table), (event.originator_id,))

    def _rotate(self, curs: Cursor[DictRow], event: Any) -> None:
        """The current secret becomes the previous one, its expiry capped by the grace period as the aggregate
        does (and already recorded if the current one was); the new secret is current, not recorded."""
        table = self.table("secret_expiry")
        curs.execute(SQL("DELETE FROM {} WHERE id = %s AND which = 'previous'").format(table), (event.originator_id,))
        curs.execute(SQL("INSERT INTO {} SELECT id, 'previous', client_id, project_id, LEAST(expires_at, %s), recorded "
                         "FROM {} WHERE id = %s AND which = 'current'").format(table, table),
                     (event.previous_secret_expires_at, event.originator_id))
        curs.execute(SQL("UPDATE {} SET expires_at = %s, recorded = false WHERE id = %s AND which = 'current'")
                     .format(table), (event.secret_expires_at, event.originator_id))

    def due_secrets(self, now: datetime, limit: int, after: tuple[datetime, str] | None) -> list[tuple[datetime,
                                                                                                      str]]:
        """``(expires_at, client_id)`` of secrets past their instant, in that order, after the cursor ``after``."""
        where = SQL("NOT recorded AND expires_at <= %s")
        params: tuple[Any, ...] = (now,)
        if after is not None:
            where += SQL(" AND (expires_at, client_id) > (%s, %s)")
            params += after
        query = SQL("SELECT expires_at, client_id FROM {} WHERE ").format(self.table("secret_expiry")) + where + SQL(
            " ORDER BY expires_at, client_id LIMIT %s")
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(query, (*params, limit))
            return [(row["expires_at"], row["client_id"]) for row in curs.fetchall()]

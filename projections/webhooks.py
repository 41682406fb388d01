"""Webhooks read model and notification outbox.

One model, so a notification is addressed to exactly the webhooks subscribed when its event happened: the model
applies ``WebhookConfigured``/``WebhookRemoved`` and the notifiable events in store order, and writes the outbox rows
in the same transaction as its tracking position (exactly-once; see ``projections.base``).

Tables:
    ``webhook_view``: the registered webhooks (the secret only encrypted), rebuilt from events.
    ``outbox_client``: client stream id -> public client_id (client events carry only the stream id).
    ``webhook_notification``: the outbox, one row per notification and webhook, with its delivery state.
    ``webhook_attempt``: every delivery attempt.

The last two are delivery history, not derived state: a rebuild keeps them, and re-deriving inserts nothing twice
because notification ids are deterministic (``ON CONFLICT DO NOTHING``). Settled ones go after the retention period
(``workers.webhooks.prune_job``), which records how far it went (``notification_horizon``, kept by rebuilds), and
events from before that horizon derive nothing, so a rebuild cannot send them again.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.utils import get_topic
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composable

from domain.client import Client
from domain.project import Project
from projections.base import ReadModel
from projections.email_outbox import EMAIL_TABLE, add_email, email_statements
from projections.notifications import NOTIFIABLE_TOPICS, Derived, derive, notification_id
from projections.outbox import HORIZON_TABLE, derivable, horizon_statements

NOTIFICATION_COLUMNS = ("id", "type", "status", "attempts", "created_at", "next_attempt_at", "delivered_at")
ATTEMPT_COLUMNS = ("attempt", "attempted_at", "status_code", "error", "duration_ms", "response_body")


@dataclass(frozen=True, slots=True)
class WebhookRow:
    """A registered webhook as listings show it."""

    project_id: UUID
    webhook_id: UUID
    url: str
    event_types: list[str]
    secret_hint: str
    created_at: datetime


class WebhooksView(ReadModel):
    """Webhooks and the notification outbox (see the module docstring)."""

    name = "webhooks"
    tables = ("webhook_view", "outbox_client")
    tenant_tables = ("webhook_view", "webhook_notification", "webhook_attempt")
    topics = frozenset({get_topic(Project.WebhookConfigured), get_topic(Project.WebhookRemoved),
                        get_topic(Client.ClientCreated), *NOTIFIABLE_TOPICS})

    def create_statements(self) -> list[Composable]:
        """The tables and the indexes of the listing, dispatch and delivery queries."""
        hooks, clients = self.table("webhook_view"), self.table("outbox_client")
        outbox, attempts = self.table("webhook_notification"), self.table("webhook_attempt")
        return [
            SQL("CREATE TABLE IF NOT EXISTS {} (webhook_id uuid PRIMARY KEY, project_id uuid NOT NULL, url text NOT "
                "NULL, event_types text[] NOT NULL, encrypted_secret text NOT NULL, secret_hint text NOT NULL, "
                "created_at timestamptz NOT NULL)").format(hooks),
            SQL("CREATE INDEX IF NOT EXISTS webhook_view_page_idx ON {} (project_id, created_at, webhook_id)")
            .format(hooks),
            SQL("CREATE TABLE IF NOT EXISTS {} (id uuid PRIMARY KEY, client_id text NOT NULL)").format(clients),
            SQL("CREATE TABLE IF NOT EXISTS {} (id uuid PRIMARY KEY, project_id uuid NOT NULL, webhook_id uuid NOT "
                "NULL, type text NOT NULL, payload text NOT NULL, created_at timestamptz NOT NULL, status text NOT "
                "NULL DEFAULT 'pending', attempts integer NOT NULL DEFAULT 0, next_attempt_at timestamptz NOT NULL, "
                "dispatched_until timestamptz, lease_until timestamptz, delivered_at timestamptz)").format(outbox),
            SQL("CREATE INDEX IF NOT EXISTS webhook_notification_due_idx ON {} (next_attempt_at) "
                "WHERE status = 'pending'").format(outbox),
            SQL("CREATE INDEX IF NOT EXISTS webhook_notification_page_idx ON {} (project_id, webhook_id, created_at, "
                "id)").format(outbox),
            SQL("CREATE INDEX IF NOT EXISTS webhook_notification_settled_idx ON {} (created_at) "
                "WHERE status <> 'pending'").format(outbox),
            SQL("CREATE TABLE IF NOT EXISTS {} (notification_id uuid NOT NULL, attempt integer NOT NULL, project_id "
                "uuid NOT NULL, webhook_id uuid NOT NULL, attempted_at timestamptz NOT NULL, status_code integer, "
                "error text, duration_ms double precision NOT NULL, response_body text, "
                "PRIMARY KEY (notification_id, attempt))").format(attempts),
            *email_statements(self.table(EMAIL_TABLE)),
            *horizon_statements(self.table(HORIZON_TABLE)),
        ]

    def apply(self, curs: Cursor[DictRow], event: Any) -> None:
        """Applies one event: a webhook change, a client's public id, or a notifiable event."""
        if isinstance(event, Project.WebhookConfigured):
            curs.execute(SQL("INSERT INTO {} (webhook_id, project_id, url, event_types, encrypted_secret, "
                             "secret_hint, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING")
                         .format(self.table("webhook_view")),
                         (event.webhook_id, event.originator_id, event.url, list(event.event_types),
                          event.encrypted_secret, event.secret_hint, event.timestamp))
        elif isinstance(event, Project.WebhookRemoved):
            curs.execute(SQL("DELETE FROM {} WHERE webhook_id = %s").format(self.table("webhook_view")),
                         (event.webhook_id,))
            curs.execute(SQL("UPDATE {} SET status = 'cancelled' WHERE webhook_id = %s AND status = 'pending'")
                         .format(self.table("webhook_notification")), (event.webhook_id,))
        elif isinstance(event, Client.ClientCreated):
            curs.execute(SQL("INSERT INTO {} (id, client_id) VALUES (%s, %s) ON CONFLICT DO NOTHING")
                         .format(self.table("outbox_client")), (event.originator_id, event.client_id))
        elif derivable(curs, self.table(HORIZON_TABLE), event):
            derived = derive(event, self._client_id(curs, event))
            if derived is not None:
                self.notify(curs, derived)

    def notify(self, curs: Cursor[DictRow], derived: Derived) -> int:
        """Adds a notification for every webhook subscribed to it, and its e-mail (whatever this process's SMTP
        setting: the e-mail's worker decides whether it is sent, ``workers.email``)."""
        added = self.add(curs, derived, self.subscribers(curs, derived.type, derived.project_id))
        return added + add_email(curs, self.table(EMAIL_TABLE), derived)

    def _client_id(self, curs: Cursor[DictRow], event: Any) -> str | None:
        if not isinstance(event, Client.Event):
            return None
        curs.execute(SQL("SELECT client_id FROM {} WHERE id = %s").format(self.table("outbox_client")),
                     (event.originator_id,))
        row = curs.fetchone()
        return str(row["client_id"]) if row else None

    def subscribers(self, curs: Cursor[DictRow], kind: str, project_id: UUID | None) -> list[tuple[UUID, UUID]]:
        """``(project_id, webhook_id)`` of the webhooks subscribed to ``kind`` (in one project, or in all)."""
        query = SQL("SELECT project_id, webhook_id FROM {} WHERE %s = ANY(event_types)").format(
            self.table("webhook_view"))
        params: list[Any] = [kind]
        if project_id is not None:
            query += SQL(" AND project_id = %s")
            params.append(project_id)
        curs.execute(query, params)
        return [(row["project_id"], row["webhook_id"]) for row in curs.fetchall()]

    def add(self, curs: Cursor[DictRow], derived: Derived, targets: list[tuple[UUID, UUID]]) -> int:
        """Inserts one outbox row per target webhook, due now; existing ids are left alone. Returns rows added."""
        if not targets:
            return 0
        added = 0
        for project_id, webhook_id in targets:
            payload = msgspec.json.encode({"type": derived.type, "timestamp": derived.timestamp,
                                           "data": {**derived.data, "project_id": str(project_id)}}).decode()
            curs.execute(SQL("INSERT INTO {} (id, project_id, webhook_id, type, payload, created_at, next_attempt_at) "
                             "VALUES (%s, %s, %s, %s, %s, now(), now()) ON CONFLICT DO NOTHING")
                         .format(self.table("webhook_notification")),
                         (notification_id(derived.key, webhook_id), project_id, webhook_id, derived.type, payload))
            added += curs.rowcount
        return added

    def page(self, project_id: UUID, *, limit: int, after: tuple[datetime, str] | None = None) -> list[WebhookRow]:
        """A page of the project's webhooks, oldest first (never their secrets)."""
        query = SQL("SELECT project_id, webhook_id, url, event_types, secret_hint, created_at FROM {} "
                    "WHERE project_id = %s").format(self.table("webhook_view"))
        params: list[Any] = [project_id]
        if after is not None:
            query += SQL(" AND (created_at, webhook_id) > (%s, %s::uuid)")
            params.extend(after)
        query += SQL(" ORDER BY created_at, webhook_id LIMIT %s")
        return [WebhookRow(**row) for row in self.tenant_select(project_id, query, (*params, limit))]

    def exists(self, project_id: UUID, webhook_id: UUID) -> bool:
        """Whether the project has this webhook now."""
        query = SQL("SELECT 1 FROM {} WHERE project_id = %s AND webhook_id = %s").format(self.table("webhook_view"))
        return bool(self.tenant_select(project_id, query, (project_id, webhook_id)))

    def deliveries(self, project_id: UUID, webhook_id: UUID, *, limit: int,
                   after: tuple[datetime, str] | None = None) -> list[dict[str, Any]]:
        """A page of a webhook's notifications, newest first, each with its attempts (oldest first)."""
        cols = SQL(", ").join(SQL("n.{}").format(SQL(c)) for c in NOTIFICATION_COLUMNS)
        attempt = SQL(", ").join(SQL("'{c}', a.{c}").format(c=SQL(c)) for c in ATTEMPT_COLUMNS)
        query = SQL("SELECT {cols}, COALESCE((SELECT json_agg(json_build_object({attempt}) ORDER BY a.attempt) "
                    "FROM {attempts} a WHERE a.notification_id = n.id), '[]') AS attempt_list FROM {outbox} n "
                    "WHERE n.project_id = %s AND n.webhook_id = %s").format(
            cols=cols, attempt=attempt, attempts=self.table("webhook_attempt"),
            outbox=self.table("webhook_notification"))
        params: list[Any] = [project_id, webhook_id]
        if after is not None:
            query += SQL(" AND (n.created_at, n.id) < (%s, %s::uuid)")
            params.extend(after)
        query += SQL(" ORDER BY n.created_at DESC, n.id DESC LIMIT %s")
        return [dict(row) for row in self.tenant_select(project_id, query, (*params, limit))]

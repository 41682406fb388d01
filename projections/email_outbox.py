"""The e-mail side of the outbox: notifications of a project mailed to its owners and admins.

Rows are added by the webhooks model (in the transaction of its tracking position) for every project notification,
whatever the applying process's SMTP setting, with deterministic ids (the notification's key and the e-mail
channel), so deriving twice adds nothing and which process applies a batch changes nothing. Whether they are sent
is the workers' decision (``workers.email``): without an SMTP server, the dispatcher settles due e-mails as
``skipped``, so configuring one later never mails the past. An e-mail derived more than ``STALE_AFTER`` after its
event (a rebuild, or a model that was stopped for long) is added ``skipped`` too: people are not mailed old news.
Delivery state and retries work as for webhooks (``projections.outbox``): kept in PostgreSQL, leased while sending,
retried on the same schedule, then marked failed.
"""

from datetime import timedelta
from typing import Any
from uuid import UUID, uuid5

import msgspec
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composable

from projections.notifications import NS_NOTIFICATION, PLATFORM_TYPES, Derived, notification_id
from projections.outbox import MAX_ERROR, due_rows, mark_due, retry_delay

EMAIL_CHANNEL = uuid5(NS_NOTIFICATION, "email")
EMAIL_TABLE = "email_notification"
STALE_AFTER = timedelta(days=1)  # how old an event may be when its e-mail is derived and still be mailed
NO_SMTP = "no SMTP server configured"


def email_statements(table: Composable) -> list[Composable]:
    """The e-mail outbox table, its due index and its settled index (for pruning)."""
    return [
        SQL("CREATE TABLE IF NOT EXISTS {} (id uuid PRIMARY KEY, project_id uuid NOT NULL, type text NOT NULL, "
            "payload text NOT NULL, created_at timestamptz NOT NULL, status text NOT NULL DEFAULT 'pending', "
            "attempts integer NOT NULL DEFAULT 0, next_attempt_at timestamptz NOT NULL, dispatched_until timestamptz, "
            "lease_until timestamptz, delivered_at timestamptz, last_error text)").format(table),
        SQL("CREATE INDEX IF NOT EXISTS email_notification_due_idx ON {} (next_attempt_at) WHERE status = 'pending'")
        .format(table),
        SQL("CREATE INDEX IF NOT EXISTS email_notification_settled_idx ON {} (created_at) WHERE status <> 'pending'")
        .format(table),
    ]


def add_email(curs: Cursor[DictRow], table: Composable, derived: Derived) -> int:
    """Adds the e-mail of a project notification (platform-wide types are not mailed), due now, or ``skipped`` when
    its event is older than ``STALE_AFTER`` by the database's clock now (not the transaction's start: a rebuild's
    transaction lasts); returns rows added."""
    if derived.project_id is None or derived.type in PLATFORM_TYPES:
        return 0
    payload = msgspec.json.encode({"type": derived.type, "timestamp": derived.timestamp,
                                   "data": {**derived.data, "project_id": str(derived.project_id)}}).decode()
    curs.execute(SQL("INSERT INTO {} (id, project_id, type, payload, created_at, next_attempt_at, status, last_error) "
                     "SELECT %s, %s, %s, %s, now(), now(), CASE WHEN stale THEN 'skipped' ELSE 'pending' END, "
                     "CASE WHEN stale THEN 'derived too late to be news' END FROM (SELECT %s::timestamptz < "
                     "clock_timestamp() - %s AS stale) s ON CONFLICT DO NOTHING").format(table),
                 (notification_id(derived.key, EMAIL_CHANNEL), derived.project_id, derived.type, payload,
                  derived.timestamp, STALE_AFTER))
    return curs.rowcount


class EmailOutbox:
    """Due e-mails, leases and outcomes (as the table owner)."""

    def __init__(self, view: Any) -> None:
        self._view = view
        self._table = view.table(EMAIL_TABLE)
        self._members = view.table("member_view")

    def due(self, *, lease: float, limit: int = 500) -> list[UUID]:
        """Marks up to ``limit`` due e-mails dispatched for ``lease`` seconds and returns their ids."""
        return mark_due(self._view, self._table, lease=lease, limit=limit)

    def skip_due(self, *, limit: int = 500) -> int:
        """Settles up to ``limit`` due e-mails as ``skipped``: no SMTP server is configured, and one configured
        later must not mail them. Not those another worker (which has one) has enqueued or is sending: they are its.
        Returns how many."""
        query = SQL("UPDATE {t} SET status = 'skipped', last_error = %s, dispatched_until = NULL WHERE id IN ({due})"
                    ).format(t=self._table, due=due_rows(self._table))
        with self._view.datastore.transaction(commit=True) as curs:
            curs.execute(query, (NO_SMTP, limit))
            return curs.rowcount

    def claim(self, email_id: UUID, *, lease: float) -> dict[str, Any] | None:
        """Leases a due e-mail; returns its row and ``recipients`` (the project's owners and admins now)."""
        query = SQL("UPDATE {t} SET lease_until = now() + make_interval(secs => %s) WHERE id = %s AND status = "
                    "'pending' AND next_attempt_at <= now() AND (lease_until IS NULL OR lease_until <= now()) "
                    "RETURNING id, project_id, type, payload, attempts").format(t=self._table)
        with self._view.datastore.transaction(commit=True) as curs:
            curs.execute(query, (lease, email_id))
            row = curs.fetchone()
            if row is None:
                return None
            curs.execute(SQL("SELECT email FROM {} WHERE project_id = %s AND role IN ('owner', 'admin') AND email IS "
                             "NOT NULL ORDER BY since, user_id").format(self._members), (row["project_id"],))
            return {**row, "recipients": [r["email"] for r in curs.fetchall()]}

    def record(self, claimed: dict[str, Any], error: str | None) -> str:
        """Records the outcome of one attempt (``error`` None: sent); returns the e-mail's new status."""
        number = int(claimed["attempts"]) + 1
        delay = None if error is None else retry_delay(number)
        status = "delivered" if error is None else ("pending" if delay is not None else "failed")
        with self._view.datastore.transaction(commit=True) as curs:
            # A late worker (its lease ran out and another sent the e-mail) must not turn delivered back to pending.
            curs.execute(SQL("UPDATE {} SET attempts = GREATEST(attempts, %s), lease_until = NULL, "
                             "dispatched_until = NULL, status = CASE WHEN status = 'pending' THEN %s ELSE status END, "
                             "last_error = %s, delivered_at = CASE WHEN %s THEN now() ELSE delivered_at END, "
                             "next_attempt_at = now() + make_interval(secs => %s) WHERE id = %s").format(self._table),
                         (number, status, (error or "")[:MAX_ERROR] or None, error is None, delay or 0,
                          claimed["id"]))
        return status

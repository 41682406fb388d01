"""The outbox's delivery side: what is due, leases, attempts, the retry schedule and the outbox's lag.

Delivery state lives in PostgreSQL, not in Redis: a notification is due while it is ``pending`` and its
``next_attempt_at`` has passed. The dispatcher marks what it enqueues with ``dispatched_until`` (so it does not
enqueue it again every tick) and a delivery holds ``lease_until`` while it calls the receiver (so two workers never
deliver the same notification at once). Both expire: a message lost with Redis, or a worker killed mid-delivery,
only delays the notification until the next dispatch after the expiry.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composable

from domain.webhooks import EXPIRY_WARNINGS_DAYS
from projections.notifications import Derived, expiring_key, warning_threshold

if TYPE_CHECKING:  # the model imports this module's schedule: no import cycle at run time
    from projections.webhooks import WebhooksView

# Seconds to wait after each failed attempt (Standard Webhooks' suggestion): 8 attempts over about 27.6 hours, so a
# receiver that is down for a day still gets the notification.
RETRY_DELAYS: tuple[int, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
# The instant before which settled notifications may have been pruned (one row, only ever moved later), and the
# margin kept above it for the clocks of the hosts that stamp events and rows.
HORIZON_TABLE = "notification_horizon"
HORIZON_MARGIN = timedelta(days=1)
MAX_RESPONSE_BODY = 1024
MAX_ERROR = 300


def retry_delay(failed_attempts: int) -> int | None:
    """Seconds before the next attempt after ``failed_attempts`` failures, or None once the schedule is spent."""
    if failed_attempts < 1 or failed_attempts > len(RETRY_DELAYS):
        return None
    return RETRY_DELAYS[failed_attempts - 1]


@dataclass(frozen=True, slots=True)

class Claimed:
    """A notification leased for one delivery attempt, with where it goes."""

    id: UUID
    project_id: UUID
    webhook_id: UUID
    type: str
    payload: str
    attempts: int
    url: str
    encrypted_secret: str


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt's outcome: ``status_code`` None when no HTTP answer came (``error`` says why)."""

    status_code: int | None
    error: str | None
    duration_ms: float
    response_body: str | None

    @property
    def succeeded(self) -> bool:
        """2xx is success (Standard Webhooks)."""
        return self.status_code is not None and 200 <= self.status_code < 300


class Outbox:
    """Delivery-side queries on the webhooks model's tables (as the table owner: workers see every project)."""

    def __init__(self, view: "WebhooksView") -> None:
        self._view = view
        self._outbox = view.table("webhook_notification")
        self._hooks = view.table("webhook_view")

    def due(self, *, lease: float, limit: int = 500) -> list[UUID]:
        """Marks up to ``limit`` due notifications dispatched for ``lease`` seconds and returns their ids."""
        return mark_due(self._view, self._outbox, lease=lease, limit=limit)

    def claim(self, notification_id: UUID, *, lease: float) -> Claimed | None:
        """Leases a due notification for one attempt; None if it is not due, delivered, or leased by another."""
        query = SQL("UPDATE {o} n SET lease_until = now() + make_interval(secs => %s) FROM {h} w "
                    "WHERE n.id = %s AND w.webhook_id = n.webhook_id AND n.status = 'pending' "
                    "AND n.next_attempt_at <= now() AND (n.lease_until IS NULL OR n.lease_until <= now()) "
                    "RETURNING n.id, n.project_id, n.webhook_id, n.type, n.payload, n.attempts, w.url, "
                    "w.encrypted_secret").format(o=self._outbox, h=self._hooks)
        with self._view.datastore.transaction(commit=True) as curs:
            curs.execute(query, (lease, notification_id))
            row = curs.fetchone()
        return Claimed(**row) if row else None

    def record(self, claimed: Claimed, attempt: Attempt) -> str:
        """Records an attempt and the notification's new state, in one transaction; returns that state."""
        number = claimed.attempts + 1
        delay = None if attempt.succeeded else retry_delay(number)
        status = "delivered" if attempt.succeeded else ("pending" if delay is not None else "failed")
        with self._view.datastore.transaction(commit=True) as curs:
            curs.execute(SQL("INSERT INTO {} (notification_id, attempt, project_id, webhook_id, attempted_at, "
                             "status_code, error, duration_ms, response_body) VALUES (%s, %s, %s, %s, now(), %s, %s, "
                             "%s, %s) ON CONFLICT DO NOTHING").format(self._view.table("webhook_attempt")),
                         (claimed.id, number, claimed.project_id, claimed.webhook_id, attempt.status_code,
                          (attempt.error or "")[:MAX_ERROR] or None, attempt.duration_ms,
                          None if attempt.response_body is None else attempt.response_body[:MAX_RESPONSE_BODY]))
            curs.execute(SQL("UPDATE {} SET attempts = GREATEST(attempts, %s), lease_until = NULL, "
                             "dispatched_until = NULL, status = CASE WHEN status = 'pending' THEN %s ELSE status END, "
                             "delivered_at = CASE WHEN %s THEN now() ELSE delivered_at END, "
                             "next_attempt_at = now() + make_interval(secs => %s) WHERE id = %s").format(self._outbox),
                         (number, status, attempt.succeeded, delay or 0, claimed.id))
        return status

    def status(self) -> dict[str, Any]:
        """The outbox's lag: pending notifications, how many are due, the oldest due time, failed ones."""
        query = SQL("SELECT count(*) FILTER (WHERE status = 'pending') AS pending, count(*) FILTER (WHERE status = "
                    "'pending' AND next_attempt_at <= now()) AS due, min(next_attempt_at) FILTER (WHERE status = "
                    "'pending') AS oldest_due, count(*) FILTER (WHERE status = 'failed') AS failed, "
                    "count(*) FILTER (WHERE status = 'delivered') AS delivered FROM {}").format(self._outbox)
        with self._view.datastore.transaction(commit=False) as curs:
            curs.execute(query)
            row = dict(curs.fetchone() or {})
        oldest = row.get("oldest_due")
        row["oldest_due"] = oldest.isoformat() if oldest else None
        return row

    def warn_expiring(self, now: datetime | None = None) -> int:
        """Adds ``client.secret.expiring`` notifications for live secrets within a warning threshold.

        Reads the clients read model; one notification per client, expiry, threshold and subscribed webhook (and
        one e-mail), so running this again, or twice at once, adds nothing. Returns how many it
        added.
        """
        now = now or datetime.now(tz=UTC)
        horizon = now + timedelta(days=max(EXPIRY_WARNINGS_DAYS))
        query = SQL("SELECT project_id, id, client_id, secret_expires_at FROM {} WHERE revoked_at IS NULL "
                    "AND secret_expires_at > %s AND secret_expires_at <= %s").format(self._view.table("client_view"))
        added = 0
        with self._view.datastore.transaction(commit=True) as curs:
            curs.execute(query, (now, horizon))
            for row in curs.fetchall():
                expires: datetime = row["secret_expires_at"]
                days = warning_threshold((expires - now).total_seconds() / 86400, EXPIRY_WARNINGS_DAYS)
                if days is None:
                    continue
                derived = Derived(key=expiring_key(row["id"], expires.isoformat(), days),
                                  type="client.secret.expiring", project_id=row["project_id"],
                                  timestamp=now.isoformat(),
                                  data={"client_id": row["client_id"], "secret_expires_at": expires.isoformat(),
                                        "days": days, "actor": "system"})
                added += self._view.notify(curs, derived)
        return added


def outbox_status(container: Any) -> dict[str, Any]:
    """The notification outbox's lag for status commands: pending, due now, the oldest due time, failed, delivered."""
    return Outbox(container.webhooks_view).status()


def horizon_statements(table: Composable) -> list[Composable]:
    """The pruning horizon's table: not one of the model's rebuilt tables, so a rebuild reads it."""
    return [SQL("CREATE TABLE IF NOT EXISTS {} (id integer PRIMARY KEY, pruned_before timestamptz NOT NULL)")
            .format(table)]


def prune_settled(view: Any, table: Composable, *, days: int, limit: int, attempts: Composable | None = None) -> int:
    """Deletes up to ``limit`` settled rows (delivered, failed, cancelled or skipped) of an outbox ``table`` created
    more than ``days`` days ago by the database's clock, with their ``attempts`` rows; returns how many went.

    The same statement moves the pruning horizon up to that instant, so the webhooks model (``derivable``) never
    derives again, in a rebuild, an event whose notifications may be gone, whatever retention another process or a
    later configuration uses. It runs under the model's lock and its rebuild lock, and not at all while a rebuild
    holds that (it then returns 0): a rebuild that read the horizon before this moved it would otherwise wait on a
    deleted row's insert conflict, then insert it again, due. Pending rows stay: they are due or leased, and settle
    within the retry schedule.
    """
    cutoff = SQL("now() - make_interval(hours => 24 * %s)")  # a fixed length of time, whatever the time zone does
    ctes = [SQL("victims AS MATERIALIZED (SELECT id FROM {t} WHERE status <> 'pending' AND created_at < (SELECT at "
                "FROM cutoff) LIMIT %s FOR UPDATE SKIP LOCKED)").format(t=table),
            SQL("gone AS (DELETE FROM {t} USING victims WHERE {t}.id = victims.id RETURNING {t}.id)").format(t=table)]
    if attempts is not None:
        ctes.append(SQL("attempts AS (DELETE FROM {} WHERE notification_id IN (SELECT id FROM gone))")
                    .format(attempts))
    statement = SQL("WITH cutoff AS (SELECT {cutoff} AS at), horizon AS (INSERT INTO {h} (id, pruned_before) "
                    "SELECT 1, at FROM cutoff ON CONFLICT (id) DO UPDATE SET pruned_before = "
                    "GREATEST({h}.pruned_before, EXCLUDED.pruned_before)), {ctes} SELECT count(*) AS n FROM gone"
                    ).format(cutoff=cutoff, h=view.table(HORIZON_TABLE), ctes=SQL(", ").join(ctes))
    with view.datastore.transaction(commit=True) as curs:
        if not view.lock_rebuilds(curs, exclusive=True):
            return 0  # a rebuild is deriving into the outbox without the model's lock: the next run prunes
        view.lock(curs)
        curs.execute(statement, (days, limit))
        row = curs.fetchone()
        return int(row["n"]) if row else 0


def derivable(curs: Cursor[DictRow], horizon: Composable, event: Any) -> bool:
    """Whether an event may derive notifications: not when it happened before the pruning horizon (with its margin),
    since its notifications may have been delivered and pruned, and deriving it again would send them twice."""
    curs.execute(SQL("SELECT pruned_before FROM {} WHERE id = 1").format(horizon))
    row = curs.fetchone()
    return row is None or event.timestamp >= row["pruned_before"] + HORIZON_MARGIN


def mark_due(view: Any, table: Composable, *, lease: float, limit: int) -> list[UUID]:
    """Marks up to ``limit`` due rows of an outbox ``table`` (pending, due, neither dispatched nor leased) as
    dispatched for ``lease`` seconds and returns their ids; shared by the webhook and the e-mail outboxes."""
    query = SQL("UPDATE {t} SET dispatched_until = now() + make_interval(secs => %s) WHERE id IN ({due}) "
                "RETURNING id").format(t=table, due=due_rows(table))
    with view.datastore.transaction(commit=True) as curs:
        curs.execute(query, (lease, limit))
        return [row["id"] for row in curs.fetchall()]


def due_rows(table: Composable) -> Composable:
    """The ids of up to ``%s`` due rows of an outbox ``table`` (pending, due, neither dispatched nor leased), oldest
    due first, locked for the caller's update (rows another transaction holds are passed over)."""
    return SQL("SELECT id FROM {t} WHERE status = 'pending' AND next_attempt_at <= now() AND (dispatched_until IS "
               "NULL OR dispatched_until <= now()) AND (lease_until IS NULL OR lease_until <= now()) "
               "ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED").format(t=table)

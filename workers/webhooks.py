"""Webhook jobs: the dispatcher (periodic), one delivery (on demand), the expiring-secret scan (periodic) and the
pruning of settled notifications (periodic).

Importing this module only registers the jobs. Dramatiq's own retries are off for deliveries: the retry schedule is
kept in PostgreSQL (``projections.outbox``), so losing Redis, or a worker in the middle of a delivery, only delays a
notification until the dispatcher's next pass after its lease expires.
"""

import logging
from typing import Any
from uuid import UUID

from cryptography.exceptions import InvalidTag

from infrastructure.webhook_delivery import Message, post
from projections.email_outbox import EMAIL_TABLE
from projections.outbox import Attempt, Outbox, prune_settled
from workers.email import dispatch_email
from workers.jobs import job
from workers.runtime import drain, enqueue, log_line

logger = logging.getLogger("keyledger.jobs")

DISPATCH_BATCH = 500
NOTIFICATION_PRUNE_EVERY = 3600.0


def _outbox(container: Any) -> Outbox:
    return Outbox(container.webhooks_view)


def dispatch(container: Any, broker: Any) -> int:
    """Brings the outbox up to the event store, then enqueues a delivery for every due notification (and a
    mailing for every due e-mail when an SMTP server is configured; without one, due e-mails are settled skipped).

    Returns how many it enqueued.
    """
    container.runner("webhooks").catch_up()
    due = _outbox(container).due(lease=container.settings.webhook_lease, limit=DISPATCH_BATCH)
    for notification_id in due:
        enqueue(broker, "webhooks.deliver", notification_id=str(notification_id))
    return len(due) + dispatch_email(container, broker, DISPATCH_BATCH)


@job("webhooks.dispatch", every=1.0, max_retries=0)
def dispatch_job(container: Any, **_: Any) -> None:
    """Periodic: enqueues the due notifications (new ones, retries due, and those whose delivery was lost).

    Enqueues on the broker the running process declared its actors on (``workers.runtime.declare`` sets it).
    """
    dispatch(container, container.broker)


@job("webhooks.deliver", max_retries=0, time_limit=120_000)
def deliver_job(container: Any, *, notification_id: str, **_: Any) -> None:
    """One delivery attempt of one notification (see ``deliver``)."""
    deliver(container, notification_id)


def deliver(container: Any, notification_id: str) -> str | None:
    """Leases the notification, posts it once and records the attempt; returns its new status.

    Returns None when there was nothing to do: already delivered, not due yet, or leased by another worker.
    """
    outbox, settings = _outbox(container), container.settings
    claimed = outbox.claim(UUID(notification_id), lease=settings.webhook_lease)
    if claimed is None:
        return None
    try:
        secret = container.webhook_secrets.open(claimed.webhook_id, claimed.encrypted_secret)
    except (InvalidTag, ValueError):  # the server key changed: recorded, retried, then failed
        attempt = Attempt(status_code=None, error="the signing secret cannot be decrypted with the server key",
                          duration_ms=0.0, response_body=None)
    else:
        attempt = post(claimed.url, Message(id=str(claimed.id), body=claimed.payload.encode(), secret=secret),
                       allow_private=settings.webhook_allow_private, timeout=settings.webhook_timeout)
    status = outbox.record(claimed, attempt)
    logger.info(log_line(event="webhook attempt", webhook_id=str(claimed.webhook_id), notification_id=str(claimed.id),
                         type=claimed.type, attempt=claimed.attempts + 1, status_code=attempt.status_code,
                         error=attempt.error, duration_ms=attempt.duration_ms, outcome=status))
    return status


@job("webhooks.warn_expiring", every=300.0, max_retries=0)
def warn_expiring_job(container: Any, **_: Any) -> None:
    """Periodic: ``client.secret.expiring`` notifications 30, 7 and 1 days before a client secret expires."""
    container.runner("clients").catch_up()
    container.runner("webhooks").catch_up()  # the subscriptions as of now
    _outbox(container).warn_expiring()


def prune_notifications(container: Any, *, batch_size: int = 5000, max_batches: int = 100) -> tuple[int, int, bool]:
    """Deletes settled webhook notifications (with their attempts) and e-mails older than the retention period, in
    batches; returns how many of each and whether more are left for the next run."""
    view, days = container.webhooks_view, container.settings.notification_retention_days
    notifications, more = drain(lambda limit: prune_settled(view, view.table("webhook_notification"), days=days,
                                                            limit=limit, attempts=view.table("webhook_attempt")),
                                batch_size=batch_size, max_batches=max_batches)
    emails, more_emails = drain(lambda limit: prune_settled(view, view.table(EMAIL_TABLE), days=days, limit=limit),
                                batch_size=batch_size, max_batches=max_batches)
    return notifications, emails, more or more_emails


@job("webhooks.prune", every=NOTIFICATION_PRUNE_EVERY, max_retries=3, time_limit=300_000, exclusive=True)
def prune_job(container: Any, **_: Any) -> None:
    """Periodic: keeps the outboxes to the retention period (``KEYLEDGER_NOTIFICATION_RETENTION_DAYS``); the
    pruning horizon it records keeps a rebuild from sending pruned notifications again (``projections.outbox``)."""
    notifications, emails, more = prune_notifications(container)
    logger.info(log_line(job="webhooks.prune", notifications=notifications, emails=emails, more=more))

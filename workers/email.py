"""Mailing notifications to a project's owners and admins (``KEYLEDGER_SMTP_URL``). Importing only registers."""

import json
import logging
from typing import Any
from uuid import UUID

from infrastructure.mailer import parse_smtp_url, send
from projections.email_outbox import NO_SMTP, EmailOutbox
from workers.jobs import job
from workers.runtime import enqueue, log_line

logger = logging.getLogger("keyledger.jobs")


def dispatch_email(container: Any, broker: Any, limit: int) -> int:
    """Enqueues a mailing for every due e-mail; returns how many.

    Without an SMTP server, due e-mails are settled as ``skipped`` instead (and pruned with the settled ones), so an
    SMTP server configured later mails only what falls due from then on.
    """
    outbox = EmailOutbox(container.webhooks_view)
    if container.settings.smtp_url is None:
        skipped = outbox.skip_due(limit=limit)
        if skipped:
            logger.info(log_line(event="e-mails skipped", reason=NO_SMTP, count=skipped))
        return 0
    due = outbox.due(lease=container.settings.webhook_lease, limit=limit)
    for email_id in due:
        enqueue(broker, "notifications.email", email_id=str(email_id))
    return len(due)


def compose(claimed: dict[str, Any]) -> tuple[str, str]:
    """The subject and text of a notification's e-mail."""
    payload = json.loads(claimed["payload"])
    subject = f"keyledger: {payload['type']} in project {claimed['project_id']}"
    details = "\n".join(f"  {key}: {value}" for key, value in sorted(payload["data"].items()))
    body = (f"keyledger notification {payload['type']} at {payload['timestamp']}\n\n{details}\n\n"
            f"You receive this as an owner or admin of project {claimed['project_id']}.\n")
    return subject, body


def mail(container: Any, email_id: str) -> str | None:
    """Leases the e-mail, sends it to the project's owners and admins and records the outcome; returns its status
    (None when there was nothing to do)."""
    settings = container.settings
    if settings.smtp_url is None:
        return None
    container.runner("members").catch_up()  # recipients are the owners and admins as of now
    outbox = EmailOutbox(container.webhooks_view)
    claimed = outbox.claim(UUID(email_id), lease=settings.webhook_lease)
    if claimed is None:
        return None
    if not claimed["recipients"]:
        return outbox.record(claimed, None)  # nobody to tell: done
    subject, body = compose(claimed)
    error = None
    try:
        send(parse_smtp_url(settings.smtp_url), recipients=claimed["recipients"], subject=subject, body=body,
             message_id=f"<{claimed['id']}@keyledger>", timeout=settings.webhook_timeout)
    except Exception as exc:  # any failure is this attempt's, recorded: left unrecorded, the lease would come back
        error = type(exc).__name__  # for ever (the exception's text may hold the server's answer: not logged)
    status = outbox.record(claimed, error)
    logger.info(log_line(event="e-mail attempt", notification_id=str(claimed["id"]), type=claimed["type"],
                         recipients=len(claimed["recipients"]), error=error, outcome=status))
    return status


@job("notifications.email", max_retries=0, time_limit=120_000)
def email_job(container: Any, *, email_id: str, **_: Any) -> None:
    """One mailing attempt of one notification (see ``mail``)."""
    mail(container, email_id)

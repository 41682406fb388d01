"""Webhooks: the notification types a project can subscribe to, and what a registered endpoint is.

Notification types follow the Standard Webhooks naming (``group.event``). The mapping from domain events to types
lives in ``projections.outbox`` so the domain stays free of delivery concerns.
"""

from dataclasses import dataclass
from urllib.parse import urlsplit

# Every type a webhook may subscribe to. ``client.secret.expiring`` is raised 30, 7 and 1 days before a client
# secret expires by a periodic scan, the others by events.
NOTIFICATION_TYPES: frozenset[str] = frozenset({
    "client.secret.expiring",
    "client.secret.rotated",
    "client.secret.expired",
    "client.revoked",
    "token.refresh_reuse_detected",
    "member.added",
    "member.removed",
    "signing_key.rotated",
})

# Days before a secret's expiry at which ``client.secret.expiring`` is sent.
EXPIRY_WARNINGS_DAYS: tuple[int, ...] = (30, 7, 1)

MAX_WEBHOOKS = 20


@dataclass(frozen=True, slots=True)
class Webhook:
    """A project's webhook endpoint as the Project aggregate keeps it (the secret stays in its event, encrypted)."""

    url: str
    event_types: tuple[str, ...]

    def wants(self, notification_type: str) -> bool:
        """Whether this endpoint subscribed to ``notification_type``."""
        return notification_type in self.event_types


def url_hint(url: str) -> str:
    """A webhook URL as those who may not manage webhooks see it: its origin, then ``/...`` if a path or a query
    follows. Chat services put an endpoint's credential there (Slack's, Discord's and Teams' hook URLs): whoever reads
    the whole URL can post to the receiver as keyledger. No user info, port aside, is kept.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:  # not a number: registration refuses it, so this is only for safety's sake
        port = ""
    rest = "/..." if parts.path not in ("", "/") or parts.query or parts.fragment else "/"
    return f"{parts.scheme}://{host}{port}{rest}"

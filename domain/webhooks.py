"""Webhooks: the notification types a project can subscribe to, and what a registered endpoint is.

Notification types follow the Standard Webhooks naming (``group.event``). The mapping from domain events to types
lives in ``projections.outbox`` so the domain stays free of delivery concerns.
"""

from dataclasses import dataclass

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

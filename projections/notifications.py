"""Which events become which webhook notifications, and what a notification says.

Events are matched by their class's qualified name (``Client.ClientRevoked``), never by importing the class, so the
mapping can name events another part of the code base adds (``Client.ClientSecretExpired``, the key ring's
activations) before they exist here. Pure functions: no I/O, unit-tested on real domain events.
"""

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid5

from domain.events import tenant_of

NS_NOTIFICATION = UUID("6f1d1c0e-4b0a-4d43-9a41-5f3c2a0f7e10")

# Event class qualified name -> (module, notification type). The module makes the event's topic.
EVENT_TYPES: dict[str, tuple[str, str]] = {
    "Client.ClientSecretRotated": ("domain.client", "client.secret.rotated"),
    "Client.ClientSecretExpired": ("domain.client", "client.secret.expired"),
    "Client.ClientRevoked": ("domain.client", "client.revoked"),
    "Token.RefreshTokenReuseDetected": ("domain.token", "token.refresh_reuse_detected"),
    "Project.MemberAdded": ("domain.project", "member.added"),
    "Project.MemberRemoved": ("domain.project", "member.removed"),
    "KeyRing.SigningKeyActivated": ("domain.keyring", "signing_key.rotated"),
}

# Notification types sent to every project's webhooks (platform events that concern every project).
PLATFORM_TYPES: frozenset[str] = frozenset({"signing_key.rotated"})

NOTIFIABLE_TOPICS: frozenset[str] = frozenset(f"{module}:{name}" for name, (module, _) in EVENT_TYPES.items())


@dataclass(frozen=True, slots=True)
class Derived:
    """A notification an event calls for, before it is addressed to webhooks.

    Attributes:
        key: a deterministic key of the event (its stream and version), so deriving twice gives the same ids.
        type: the notification type.
        project_id: the project whose webhooks receive it, or None for every project's.
        timestamp: when it happened (ISO 8601).
        data: the payload's ``data``: identifiers and times only, never a secret.
    """

    key: str
    type: str
    project_id: UUID | None
    timestamp: str
    data: dict[str, Any]


def _iso(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def _client_data(event: Any, client_id: str | None) -> dict[str, Any]:
    data: dict[str, Any] = {"client_id": client_id}
    for name in ("secret_hint", "secret_expires_at", "previous_secret_expires_at", "expired_at"):
        if hasattr(event, name):
            data[name] = _iso(getattr(event, name))
    return data


def _reuse_data(event: Any, _: str | None) -> dict[str, Any]:
    family = getattr(event, "family_id", None)
    return {"token_id": str(event.originator_id), "family_id": str(family) if family else None}


def _member_data(event: Any, _: str | None) -> dict[str, Any]:
    data: dict[str, Any] = {"user_id": str(event.user_id)}
    if hasattr(event, "role"):
        data["role"] = str(event.role)
    return data


def _key_data(event: Any, _: str | None) -> dict[str, Any]:
    return {"kid": getattr(event, "kid", None)}


_DATA: dict[str, Callable[[Any, str | None], dict[str, Any]]] = {
    "client.secret.rotated": _client_data, "client.secret.expired": _client_data, "client.revoked": _client_data,
    "token.refresh_reuse_detected": _reuse_data, "member.added": _member_data, "member.removed": _member_data,
    "signing_key.rotated": _key_data,
}


def notification_type(event: Any) -> str | None:
    """The notification type ``event`` calls for, or None."""
    entry = EVENT_TYPES.get(".".join(type(event).__qualname__.split(".")[-2:]))  # Aggregate.Event
    return entry[1] if entry else None


def derive(event: Any, client_id: str | None = None) -> Derived | None:
    """The notification an event calls for, or None (not notifiable, or a project event of no project).

    Args:
        event: a domain event.
        client_id: the public id of the client a client event concerns (client events carry only its stream id).
    """
    kind = notification_type(event)
    if kind is None:
        return None
    project_id = None if kind in PLATFORM_TYPES else tenant_of(event)
    if project_id is None and kind not in PLATFORM_TYPES:
        return None  # a dashboard login's reuse is platform-wide: no project to tell
    data = {"project_id": str(project_id) if project_id else None, **_DATA[kind](event, client_id),
            "actor": str(getattr(event, "actor", "system"))}
    return Derived(key=f"{event.originator_id}:{event.originator_version}", type=kind, project_id=project_id,
                   timestamp=event.timestamp.isoformat(), data=data)


def notification_id(key: str, webhook_id: UUID) -> UUID:
    """The deterministic id of one notification to one webhook: the ``webhook-id`` header of every attempt."""
    return uuid5(NS_NOTIFICATION, f"{key}:{webhook_id}")


def expiring_key(client_stream: UUID, expires_at: str, days: int) -> str:
    """The key of a ``client.secret.expiring`` warning: one per client, expiry and threshold."""
    digest = hashlib.sha256(f"{client_stream}:{expires_at}:{days}".encode()).hexdigest()[:32]
    return f"expiring:{digest}"


def warning_threshold(days_left: float, thresholds: tuple[int, ...]) -> int | None:
    """The tightest warning threshold (in days) a secret with ``days_left`` has crossed, or None.

    A secret made with 5 days to live gets the 7-day warning, not a stale 30-day one as well.
    """
    crossed = [d for d in thresholds if 0 < days_left <= d]
    return min(crossed) if crossed else None

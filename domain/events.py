"""What every event carries: its tenant, its actor and its time.

Events of a project's own stream carry the project as their originator id; events of clients and tokens carry a
``project_id`` attribute; platform-level events (users, the email index, the key ring, dashboard tokens) belong to
no project and answer None. Every event has an ``actor`` (``user:<id>``, ``client:<client_id>`` or ``system``) and
eventsourcing's ``timestamp``.
"""

from typing import Any
from uuid import UUID

from domain.project import Project


def tenant_of(event: Any) -> UUID | None:
    """Returns the project an event belongs to, or None for platform-level events."""
    if isinstance(event, Project.Event):
        return as_uuid(event.originator_id)
    return as_uuid(getattr(event, "project_id", None))


def as_uuid(value: Any) -> UUID | None:
    """An event's id value as a UUID (None stays None). Decoded events already hold UUIDs: they are returned as they
    are, since a round trip through text costs more than the rest of an audit entry's id work."""
    if value is None or type(value) is UUID:
        return value
    return UUID(str(value))


def actor_of(event: Any) -> str:
    """Returns who caused an event."""
    return str(event.actor)

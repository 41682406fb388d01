"""msgspec Structs of the webhook routes (request bodies strict: unknown fields refused)."""

from typing import Annotated

import msgspec

Url = Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
EventType = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]


class WebhookBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /v1/projects/{id}/webhooks``."""

    url: Url
    event_types: Annotated[list[EventType], msgspec.Meta(min_length=1, max_length=20)]


class WebhookOut(msgspec.Struct, omit_defaults=True):
    """A webhook; ``secret`` only in the answer that created it."""

    id: str
    project_id: str
    url: str
    event_types: list[str]
    secret_hint: str
    created_at: str | None = None
    secret: str | None = None


class WebhookPage(msgspec.Struct):
    """A page of webhooks; ``next_cursor`` is null on the last page."""

    items: list[WebhookOut]
    next_cursor: str | None


class AttemptOut(msgspec.Struct):
    """One delivery attempt: the receiver's status code (null when it did not answer), the error if any, how long
    it took, when, and the start of the response body."""

    attempt: int
    attempted_at: str
    status_code: int | None
    error: str | None
    duration_ms: float
    response_body: str | None


class DeliveryOut(msgspec.Struct):
    """One notification to the webhook: ``id`` is the ``webhook-id`` header of every attempt."""

    id: str
    type: str
    status: str
    created_at: str
    next_attempt_at: str | None
    delivered_at: str | None
    attempts: list[AttemptOut]


class DeliveryPage(msgspec.Struct):
    """A page of deliveries, newest first; ``next_cursor`` is null on the last page."""

    items: list[DeliveryOut]
    next_cursor: str | None

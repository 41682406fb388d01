"""A project's webhooks: register and remove endpoints that receive signed notifications.

Commands decide on the project's own stream (rights included) and save with optimistic concurrency, like the
membership commands. The signing secret is made here and shown once; the Project's ``WebhookConfigured`` event
records only its ciphertext (see ``infrastructure.crypto.webhook_secrets``).
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID, uuid4

from eventsourcing.persistence import IntegrityError

from application.authz import Principal, authorize_on
from application.store import Keyledger
from domain.errors import Conflict, InvalidArgument, NotFound
from domain.project import Project
from domain.webhooks import NOTIFICATION_TYPES

MANAGE_PERMISSION = "project:write"  # owners and admins (and clients given that scope)
READ_PERMISSION = "project:read"
ATTEMPTS = 3


class SealedSecret(Protocol):
    """A new secret: shown once, stored only sealed."""

    secret: str
    encrypted: str
    hint: str


class SecretMaker(Protocol):
    """Makes a webhook's signing secret, encrypted for storage."""

    def new(self, webhook_id: UUID) -> SealedSecret:
        """Returns a new secret for ``webhook_id``."""
        ...


@dataclass(frozen=True, slots=True)
class ConfigureWebhook:
    """Register ``url`` to receive the notifications of ``event_types`` for a project."""

    project_id: UUID
    url: str
    event_types: tuple[str, ...]
    caller: Principal


@dataclass(frozen=True, slots=True)
class RemoveWebhook:
    """Stop sending notifications to a webhook (those not yet delivered are dropped)."""

    project_id: UUID
    webhook_id: UUID
    caller: Principal


@dataclass(frozen=True, slots=True)
class ConfiguredWebhook:
    """A registered webhook and its secret (shown once), with the store position of its event."""

    webhook_id: UUID
    url: str
    event_types: tuple[str, ...]
    secret: str
    secret_hint: str
    position: int


def check_event_types(event_types: tuple[str, ...]) -> tuple[str, ...]:
    """The requested types, known, sorted and unique.

    Raises:
        InvalidArgument: none, or an unknown type.
    """
    if not event_types:
        raise InvalidArgument("event_types must name at least one notification type")
    unknown = sorted(set(event_types) - NOTIFICATION_TYPES)
    if unknown:
        known = ", ".join(sorted(NOTIFICATION_TYPES))
        raise InvalidArgument(f"unknown event types: {', '.join(unknown)}; known: {known}")
    return tuple(sorted(set(event_types)))


@dataclass(frozen=True, slots=True)
class Webhooks:
    """Handlers of the webhook commands.

    Attributes:
        app: the event store.
        secrets: makes sealed signing secrets.
        check_url: raises ``InvalidArgument`` for a URL the server must not call (the SSRF guard's first check).
    """

    app: Keyledger
    secrets: SecretMaker
    check_url: Callable[[str], None]

    def configure(self, command: ConfigureWebhook) -> ConfiguredWebhook:
        """Registers the webhook.

        Raises:
            NotFound: the caller may not see the project.
            Forbidden: the caller lacks ``project:write``.
            InvalidArgument: an unsafe URL or unknown event types.
            InvariantViolated: the project has as many webhooks as allowed.
        """
        webhook_id = uuid4()
        sealed: list[SealedSecret] = []
        types: list[tuple[str, ...]] = []

        def decide(project: Project) -> None:
            authorize_on(project, command.caller, MANAGE_PERMISSION)  # before any 400: nothing leaks to outsiders
            types.append(check_event_types(command.event_types))
            self.check_url(command.url)
            sealed.append(self.secrets.new(webhook_id))
            project.configure_webhook(webhook_id=webhook_id, url=command.url, event_types=list(types[-1]),
                                      encrypted_secret=sealed[-1].encrypted, secret_hint=sealed[-1].hint,
                                      actor=command.caller.actor)

        position = self._decide(command.project_id, decide)
        return ConfiguredWebhook(webhook_id=webhook_id, url=command.url, event_types=types[-1],
                                 secret=sealed[-1].secret, secret_hint=sealed[-1].hint, position=position)

    def remove(self, command: RemoveWebhook) -> int:
        """Removes the webhook; returns the position of its event.

        Raises:
            NotFound: the caller may not see the project, or no such webhook in it.
            Forbidden: the caller lacks ``project:write``.
        """

        def decide(project: Project) -> None:
            authorize_on(project, command.caller, MANAGE_PERMISSION)
            project.remove_webhook(webhook_id=command.webhook_id, actor=command.caller.actor)

        return self._decide(command.project_id, decide)

    def _decide(self, project_id: UUID, decide: Callable[[Project], None]) -> int:
        """Runs ``decide`` on the project's current version and saves, deciding again after a concurrent change."""
        for _ in range(ATTEMPTS):
            project = self.app.find(project_id, Project)
            if project is None:
                raise NotFound("project")
            decide(project)
            try:
                recordings = self.app.save(project)
            except IntegrityError:
                continue
            return max((r.notification.id for r in recordings), default=0)
        raise Conflict("the project changed meanwhile; try again")

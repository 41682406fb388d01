"""Helpers of the webhook integration tests: a container allowing private targets, an owner, a subscription."""

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from application.authz import Principal
from application.members import AddMember
from application.webhooks import ConfiguredWebhook, ConfigureWebhook
from domain.scopes import ALL_SCOPES
from infrastructure.bootstrap import Container, Endpoints, build
from infrastructure.settings import Settings
from tests.conftest import fresh_database
from tests.integration.support import fresh_email, sign_up

WEBHOOK_TYPES = ("member.added", "member.removed", "client.revoked", "client.secret.rotated",
                 "client.secret.expiring", "token.refresh_reuse_detected", "signing_key.rotated")


def webhook_settings(settings: Settings, **changes: Any) -> Settings:
    """The session's settings with private targets allowed and a short lease, for tests that deliver locally."""
    return replace(settings, **{"webhook_allow_private": True, "webhook_lease": 2, "webhook_timeout": 5, **changes})


@contextlib.contextmanager
def webhook_container(server_url: str, redis_url: str, settings: Settings) -> Iterator[tuple[Container, str]]:
    """A container on a fresh database whose settings allow delivering to 127.0.0.1, and the database's URL."""
    with fresh_database(server_url) as url:
        built = build(webhook_settings(settings), Endpoints(database_url=url, redis_url=redis_url), migrate=True)
        try:
            yield built, url
        finally:
            built.close()


def owner(signed: Any) -> Principal:
    """The signed-up person as the caller of commands in their project, with every scope."""
    return Principal(client_id="dashboard", user_id=signed.user.id, project_id=None, scopes=ALL_SCOPES,
                     token_id=uuid.uuid4())


def subscribe(container: Container, signed: Any, url: str,
              types: tuple[str, ...] = WEBHOOK_TYPES) -> ConfiguredWebhook:
    """Registers ``url`` for the signed-up person's project."""
    return container.webhooks.configure(ConfigureWebhook(project_id=signed.project.id, url=url, event_types=types,
                                                         caller=owner(signed)))


def add_member(container: Container, signed: Any, role: str = "developer") -> uuid.UUID:
    """Signs up someone else and adds them to the project; returns their user id."""
    other = sign_up(container, email=fresh_email("member"))
    container.members_admin.add(AddMember(project_id=signed.project.id, email=other.user.email, role=role,
                                          caller=owner(signed)))
    return other.user.id


def outbox_rows(container: Container, webhook_id: uuid.UUID) -> list[dict[str, Any]]:
    """The webhook's outbox rows, oldest first."""
    view = container.webhooks_view
    with view.datastore.transaction(commit=False) as curs:
        curs.execute(f"SELECT * FROM {view.datastore.schema}.webhook_notification WHERE webhook_id = %s "
                     "ORDER BY created_at, id", (webhook_id,))
        return [dict(r) for r in curs.fetchall()]


def make_due(container: Container) -> None:
    """Moves every pending notification's next attempt to now (instead of waiting out the backoff)."""
    view = container.webhooks_view
    with view.datastore.transaction(commit=True) as curs:
        curs.execute(f"UPDATE {view.datastore.schema}.webhook_notification SET next_attempt_at = now() "
                     "WHERE status = 'pending'")

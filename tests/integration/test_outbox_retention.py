"""Settled notifications are kept for the retention period and then pruned with their attempts, and a rebuild does
not send again what was pruned: against a real PostgreSQL and a real HTTP receiver."""

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from infrastructure.bootstrap import Container
from infrastructure.postgres import STORE_CONNINFO
from infrastructure.settings import Settings
from projections.outbox import prune_settled
from tests.integration.support import sign_up
from tests.integration.webhook_support import add_member, outbox_rows, subscribe, webhook_container
from tests.receiver import Receiver, serve
from workers.webhooks import deliver, prune_notifications

pytestmark = pytest.mark.integration

AGED = 100  # days: past the default retention (90)


@pytest.fixture
def hooks(server_url: str, redis_url: str, settings: Settings) -> Iterator[Container]:
    with webhook_container(server_url, redis_url, settings) as (container, _):
        yield container


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serve(Receiver()) as running:
        yield running


def execute(container: Container, statement: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    view = container.webhooks_view
    with view.datastore.transaction(commit=True) as curs:
        curs.execute(statement.replace("{schema}", view.datastore.schema), params)
        return [dict(row) for row in curs.fetchall()] if curs.description else []


def age(container: Container, table: str, row_id: uuid.UUID) -> None:
    execute(container, f"UPDATE {{schema}}.{table} SET created_at = created_at - make_interval(days => %s) "
            "WHERE id = %s", (AGED, row_id))


def attempts_of(container: Container, notification_id: uuid.UUID) -> int:
    [row] = execute(container, "SELECT count(*) AS n FROM {schema}.webhook_attempt WHERE notification_id = %s",
                    (notification_id,))
    return int(row["n"])


def email_row(container: Container, status: str, *, aged: bool) -> uuid.UUID:
    email_id = uuid.uuid4()
    execute(container, "INSERT INTO {schema}.email_notification (id, project_id, type, payload, created_at, status, "
            "next_attempt_at) VALUES (%s, %s, 'member.added', '{}', now() - make_interval(days => %s), %s, now())",
            (email_id, uuid.uuid4(), AGED if aged else 0, status))
    return email_id


def test_settled_notifications_past_the_retention_go_with_their_attempts(hooks: Container,
                                                                          receiver: Receiver) -> None:
    signed = sign_up(hooks)
    hook = subscribe(hooks, signed, receiver.url, ("member.added",))
    for _ in range(5):
        add_member(hooks, signed)
    hooks.runner("webhooks").catch_up()
    rows = outbox_rows(hooks, hook.webhook_id)
    old_delivered, old_failed, old_cancelled, recent, old_pending = (row["id"] for row in rows)
    for delivered in (old_delivered, recent):
        assert deliver(hooks, str(delivered)) == "delivered"
    for settled, status in ((old_failed, "failed"), (old_cancelled, "cancelled")):
        execute(hooks, "UPDATE {schema}.webhook_notification SET status = %s WHERE id = %s", (status, settled))
    for aged in (old_delivered, old_failed, old_cancelled, old_pending):
        age(hooks, "webhook_notification", aged)
    emails = {(status, aged): email_row(hooks, status, aged=aged) for status, aged in (
        ("delivered", True), ("failed", True), ("skipped", True), ("pending", True), ("failed", False))}

    assert prune_notifications(hooks, batch_size=1, max_batches=1) == (1, 1, True)  # a batch each, more left
    assert prune_notifications(hooks, batch_size=1) == (2, 2, False)

    assert {row["id"] for row in outbox_rows(hooks, hook.webhook_id)} == {recent, old_pending}
    assert attempts_of(hooks, old_delivered) == 0 and attempts_of(hooks, recent) == 1
    left = {row["id"] for row in execute(hooks, "SELECT id FROM {schema}.email_notification")}
    derived = {row["id"] for row in execute(hooks, "SELECT id FROM {schema}.email_notification WHERE project_id = %s",
                                            (signed.project.id,))}
    assert len(derived) == 5  # the members' additions, mailed too: recent, kept
    assert left == {emails["pending", True], emails["failed", False], *derived}
    add_member(hooks, signed)  # the horizon the pruning recorded (90 days back) leaves new events notifying
    hooks.runner("webhooks").catch_up()
    assert len(outbox_rows(hooks, hook.webhook_id)) == 3


def test_pruning_skips_its_run_while_a_rebuild_is_in_progress(hooks: Container) -> None:
    """A rebuild derives into the outbox without the model's lock (``projections.rebuild``) and holds the model's
    rebuild lock meanwhile; a prune run then deletes nothing (a row it deleted could be derived again, due)."""
    aged = email_row(hooks, "delivered", aged=True)
    view = hooks.webhooks_view
    with psycopg.connect(str(hooks.app.env[STORE_CONNINFO]), row_factory=dict_row) as rebuilding:
        view.lock_rebuilds(rebuilding.cursor(), exclusive=False)  # as a rebuild holds it, for its whole length
        assert prune_notifications(hooks) == (0, 0, False)
        assert execute(hooks, "SELECT id FROM {schema}.email_notification WHERE id = %s", (aged,))
    assert prune_notifications(hooks) == (0, 1, False)
    assert not execute(hooks, "SELECT id FROM {schema}.email_notification WHERE id = %s", (aged,))


def test_a_rebuild_does_not_send_again_what_was_pruned(hooks: Container, receiver: Receiver) -> None:
    """Pruning records how far it went; events from before that horizon derive nothing, whatever retention the
    rebuilding process is configured with. Here everything settled so far is pruned (zero days) instead of waiting a
    season; without the horizon the rebuild adds the notification again, due now: a second delivery."""
    signed = sign_up(hooks)
    hook = subscribe(hooks, signed, receiver.url, ("member.added",))
    add_member(hooks, signed)
    hooks.runner("webhooks").catch_up()
    [row] = outbox_rows(hooks, hook.webhook_id)
    assert deliver(hooks, str(row["id"])) == "delivered"
    view = hooks.webhooks_view
    for days, pruned in ((0, 1), (90, 0)):  # a later, longer retention does not move the horizon back
        assert prune_settled(view, view.table("webhook_notification"), days=days, limit=10,
                             attempts=view.table("webhook_attempt")) == pruned

    hooks.runner("webhooks").rebuild()
    assert outbox_rows(hooks, hook.webhook_id) == []

    execute(hooks, "DELETE FROM {schema}.notification_horizon")  # the control: the same rebuild without a horizon
    hooks.runner("webhooks").rebuild()
    assert [again["status"] for again in outbox_rows(hooks, hook.webhook_id)] == ["pending"]

"""The notification outbox against a real PostgreSQL and a real HTTP receiver: derivation with exactly-once
tracking, Standard Webhooks deliveries, retries kept in PostgreSQL, leases, cancellation, rebuilds, warnings."""

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from application.accounts import CreateClient
from application.clients import RotateSecret
from application.webhooks import RemoveWebhook
from domain.ids import client_aggregate_id, keyring_id
from domain.keyring import KeyRing
from domain.scopes import ALL_SCOPES
from infrastructure.bootstrap import Container
from infrastructure.crypto.hashing import derive_key
from infrastructure.crypto.keys import SigningKeyFactory
from infrastructure.settings import Settings
from projections.notifications import notification_id
from projections.outbox import MAX_RESPONSE_BODY, Outbox
from tests.conftest import SECRET_KEY
from tests.integration.support import sign_up
from tests.integration.webhook_support import add_member, make_due, outbox_rows, owner, subscribe, webhook_container
from tests.receiver import Receiver, serve
from workers.webhooks import deliver, warn_expiring_job

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def hooks_and_url(server_url: str, redis_url: str, settings: Settings) -> Iterator[tuple[Container, str]]:
    with webhook_container(server_url, redis_url, settings) as built:
        yield built


@pytest.fixture
def hooks(hooks_and_url: tuple[Container, str]) -> Container:
    return hooks_and_url[0]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serve(Receiver()) as running:
        yield running


def catch_up(container: Container) -> None:
    container.runner("webhooks").catch_up()


def test_an_event_becomes_one_signed_delivery_per_subscribed_webhook(hooks: Container, receiver: Receiver) -> None:
    signed = sign_up(hooks)
    hook = subscribe(hooks, signed, receiver.url, ("member.added",))
    other = subscribe(hooks, signed, receiver.url, ("member.removed",))  # not subscribed to member.added
    user_id = add_member(hooks, signed)
    catch_up(hooks)
    rows = outbox_rows(hooks, hook.webhook_id)
    assert [r["type"] for r in rows] == ["member.added"] and outbox_rows(hooks, other.webhook_id) == []
    assert deliver(hooks, str(rows[0]["id"])) == "delivered"
    [request] = receiver.requests
    assert request.id == str(rows[0]["id"]) and request.valid_for(hook.secret)
    assert not request.valid_for(other.secret)
    body = json.loads(request.body)
    assert body["type"] == "member.added" and body["data"]["user_id"] == str(user_id)
    assert body["data"]["project_id"] == str(signed.project.id) and body["data"]["role"] == "developer"
    assert set(body) == {"type", "timestamp", "data"}
    assert request.headers["content-type"] == "application/json"
    assert deliver(hooks, str(rows[0]["id"])) is None  # delivered: nothing more to do
    assert len(receiver.requests) == 1


def test_deriving_again_adds_nothing(hooks: Container, receiver: Receiver) -> None:
    signed = sign_up(hooks)
    hook = subscribe(hooks, signed, receiver.url)
    add_member(hooks, signed)
    catch_up(hooks)
    before = outbox_rows(hooks, hook.webhook_id)
    assert hooks.runner("webhooks").catch_up() == 0
    position = hooks.runner("webhooks").rebuild()  # replays every event: same deterministic ids, state kept
    assert position == hooks.app.recorder.max_notification_id()
    assert outbox_rows(hooks, hook.webhook_id) == before


def test_a_failed_attempt_is_retried_later_with_the_same_webhook_id(hooks: Container) -> None:
    with serve(Receiver(statuses=[500])) as receiver:
        signed = sign_up(hooks)
        hook = subscribe(hooks, signed, receiver.url, ("member.added",))
        add_member(hooks, signed)
        catch_up(hooks)
        [row] = outbox_rows(hooks, hook.webhook_id)
        attempted = datetime.now(tz=UTC)  # the attempt's transaction starts later: its now() is no earlier
        assert deliver(hooks, str(row["id"])) == "pending"
        [after] = outbox_rows(hooks, hook.webhook_id)
        assert after["attempts"] == 1 and after["lease_until"] is None
        assert after["next_attempt_at"] >= attempted + timedelta(seconds=5)  # the 5 s backoff, however long it took
        assert deliver(hooks, str(row["id"])) is None  # not due yet
        make_due(hooks)
        assert deliver(hooks, str(row["id"])) == "delivered"
        assert receiver.ids() == [str(row["id"])] * 2
        deliveries = hooks.webhooks_view.deliveries(signed.project.id, hook.webhook_id, limit=10)
        [shown] = deliveries
        codes = [(a["attempt"], a["status_code"]) for a in shown["attempt_list"]]
        assert codes == [(1, 500), (2, 200)] and shown["status"] == "delivered"
        assert len(shown["attempt_list"][0]["response_body"]) == MAX_RESPONSE_BODY  # truncated
        assert shown["attempt_list"][1]["response_body"] == "ok"


def test_a_notification_is_marked_failed_once_the_schedule_is_spent(hooks: Container) -> None:
    with serve(Receiver(statuses=[503] * 10)) as receiver:
        signed = sign_up(hooks)
        hook = subscribe(hooks, signed, receiver.url, ("member.added",))
        add_member(hooks, signed)
        catch_up(hooks)
        [row] = outbox_rows(hooks, hook.webhook_id)
        view = hooks.webhooks_view
        with view.datastore.transaction(commit=True) as curs:  # seven failures already, the last one now due
            curs.execute(f"UPDATE {view.datastore.schema}.webhook_notification SET attempts = 7 WHERE id = %s",
                         (row["id"],))
        assert deliver(hooks, str(row["id"])) == "failed"
        assert outbox_rows(hooks, hook.webhook_id)[0]["status"] == "failed"
        assert deliver(hooks, str(row["id"])) is None


def test_a_leased_notification_is_not_claimed_twice_until_the_lease_expires(hooks: Container,
                                                                             receiver: Receiver) -> None:
    signed = sign_up(hooks)
    hook = subscribe(hooks, signed, receiver.url, ("member.added",))
    add_member(hooks, signed)
    catch_up(hooks)
    [row] = outbox_rows(hooks, hook.webhook_id)
    outbox = Outbox(hooks.webhooks_view)
    assert outbox.claim(row["id"], lease=60) is not None
    assert outbox.claim(row["id"], lease=60) is None
    assert deliver(hooks, str(row["id"])) is None and receiver.requests == []
    view = hooks.webhooks_view
    with view.datastore.transaction(commit=True) as curs:  # the lease holder died: its lease runs out
        curs.execute(f"UPDATE {view.datastore.schema}.webhook_notification SET lease_until = now() WHERE id = %s",
                     (row["id"],))
    assert deliver(hooks, str(row["id"])) == "delivered"


def test_the_dispatcher_marks_what_it_hands_out_until_the_mark_expires(hooks: Container, receiver: Receiver) -> None:
    signed = sign_up(hooks)
    subscribe(hooks, signed, receiver.url, ("member.added",))
    add_member(hooks, signed)
    catch_up(hooks)
    outbox = Outbox(hooks.webhooks_view)
    first = outbox.due(lease=60)
    assert first and outbox.due(lease=60) == []
    view = hooks.webhooks_view
    with view.datastore.transaction(commit=True) as curs:
        curs.execute(f"UPDATE {view.datastore.schema}.webhook_notification SET dispatched_until = now() "
                     "WHERE status = 'pending'")
    assert set(first) <= set(outbox.due(lease=60))


def test_removing_a_webhook_drops_its_pending_notifications(hooks: Container, receiver: Receiver) -> None:
    signed = sign_up(hooks)
    hook = subscribe(hooks, signed, receiver.url, ("member.added",))
    add_member(hooks, signed)
    catch_up(hooks)
    [row] = outbox_rows(hooks, hook.webhook_id)
    hooks.webhooks.remove(RemoveWebhook(project_id=signed.project.id, webhook_id=hook.webhook_id,
                                        caller=owner(signed)))
    catch_up(hooks)
    assert outbox_rows(hooks, hook.webhook_id)[0]["status"] == "cancelled"
    assert deliver(hooks, str(row["id"])) is None and receiver.requests == []


def test_client_events_name_the_public_client_id(hooks: Container, receiver: Receiver) -> None:
    signed = sign_up(hooks)
    hook = subscribe(hooks, signed, receiver.url, ("client.secret.rotated", "client.revoked"))
    client_id = signed.client.client.client_id
    rotated = hooks.clients.rotate(RotateSecret(project_id=signed.project.id, client_id=client_id, actor="system",
                                                caller_permissions=ALL_SCOPES))
    catch_up(hooks)
    [row] = outbox_rows(hooks, hook.webhook_id)
    payload: dict[str, Any] = json.loads(row["payload"])
    assert payload["type"] == "client.secret.rotated" and payload["data"]["client_id"] == client_id
    assert rotated.client_secret not in row["payload"] and rotated.client_secret[5:25] not in row["payload"]
    assert payload["data"]["secret_hint"] == rotated.client.secret_hint
    assert row["id"] == notification_id(payload_key(hooks, client_id), hook.webhook_id)


def payload_key(container: Container, client_id: str) -> str:
    client_stream = client_aggregate_id(client_id)
    return f"{client_stream}:2"  # ClientCreated is version 1, the rotation version 2


def test_expiry_warnings_are_sent_once_per_threshold(hooks: Container, receiver: Receiver) -> None:
    signed = sign_up(hooks)
    hook = subscribe(hooks, signed, receiver.url, ("client.secret.expiring",))
    new = hooks.accounts.new_client(CreateClient(project_id=signed.project.id, name="short", actor="system",
                                                 secret_ttl=5 * 86400))
    hooks.app.save(new.client)
    hooks.runner("clients").catch_up()
    catch_up(hooks)
    outbox = Outbox(hooks.webhooks_view)
    now = datetime.now(tz=UTC)
    # Each warning is the webhook's notification and the owners' e-mail.
    assert outbox.warn_expiring(now) == 2  # the 7-day warning only (the 1-year first client is not due)
    assert outbox.warn_expiring(now) == 0
    assert outbox.warn_expiring(now + timedelta(days=4, hours=12)) == 2  # the 1-day warning
    assert outbox.warn_expiring(now + timedelta(days=6)) == 0  # expired: no warning
    payloads = [json.loads(r["payload"]) for r in outbox_rows(hooks, hook.webhook_id)]
    assert sorted(p["data"]["days"] for p in payloads) == [1, 7]
    assert {p["data"]["client_id"] for p in payloads} == {new.client.client_id}
    assert all(p["type"] == "client.secret.expiring" for p in payloads)


def test_the_outbox_status_shows_the_lag(hooks: Container, receiver: Receiver) -> None:
    signed = sign_up(hooks)
    subscribe(hooks, signed, receiver.url, ("member.added",))
    add_member(hooks, signed)
    catch_up(hooks)
    status = Outbox(hooks.webhooks_view).status()
    assert status["pending"] >= 1 and status["due"] >= 1 and status["oldest_due"] is not None


def test_projections_status_prints_the_outbox_lag(hooks_and_url: tuple[Container, str], receiver: Receiver,
                                                  redis_url: str) -> None:
    hooks, url = hooks_and_url
    signed = sign_up(hooks)
    subscribe(hooks, signed, receiver.url, ("member.added",))
    add_member(hooks, signed)
    catch_up(hooks)
    before = Outbox(hooks.webhooks_view).status()
    env = {**os.environ, "KEYLEDGER_DATABASE_URL": url,
           "KEYLEDGER_REDIS_URL": redis_url, "KEYLEDGER_SECRET_KEY": SECRET_KEY}
    done = subprocess.run([sys.executable, "-m", "infrastructure.cli", "projections", "status"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    [line] = [line for line in done.stdout.splitlines() if line.startswith("webhook outbox:")]
    assert f"pending {before['pending']}," in line and f"failed {before['failed']}," in line
    assert before["pending"] >= 1 and f"oldest_due {before['oldest_due']}," in line


def test_a_secret_the_server_key_cannot_open_is_recorded_as_a_failed_attempt(hooks: Container,
                                                                            receiver: Receiver) -> None:
    signed = sign_up(hooks)
    hook = subscribe(hooks, signed, receiver.url, ("member.added",))
    add_member(hooks, signed)
    catch_up(hooks)
    view = hooks.webhooks_view
    with view.datastore.transaction(commit=True) as curs:  # as if sealed under another KEYLEDGER_SECRET_KEY
        curs.execute(f"UPDATE {view.datastore.schema}.webhook_view SET encrypted_secret = %s WHERE webhook_id = %s",
                     (hooks.webhook_secrets.new(hook.webhook_id).encrypted[:-8] + "AAAAAAA=", hook.webhook_id))
    [row] = outbox_rows(hooks, hook.webhook_id)
    assert deliver(hooks, str(row["id"])) == "pending"
    [shown] = hooks.webhooks_view.deliveries(signed.project.id, hook.webhook_id, limit=5)
    assert "cannot be decrypted" in shown["attempt_list"][0]["error"] and receiver.requests == []


def test_a_signing_key_activation_is_sent_to_every_projects_subscribed_webhooks(hooks: Container,
                                                                                receiver: Receiver) -> None:
    first, second, quiet = sign_up(hooks), sign_up(hooks), sign_up(hooks)
    hooks_of = [subscribe(hooks, first, receiver.url, ("signing_key.rotated",)),
                subscribe(hooks, second, receiver.url, ("signing_key.rotated", "member.added"))]
    unsubscribed = subscribe(hooks, quiet, receiver.url, ("member.added",))
    ring = hooks.app.load(keyring_id(), KeyRing)
    factory = SigningKeyFactory(derive_key(SECRET_KEY.encode(), "keyledger signing key encryption v1"))
    new = factory.generate("ES256")
    ring.add_key(kid=new.kid, alg=new.alg, public_jwk=new.public_jwk, encrypted_private_key=new.encrypted_private_key,
                 created_at=datetime.now(tz=UTC), actor="system")
    ring.activate(kid=new.kid, actor="system")
    hooks.app.save(ring)
    catch_up(hooks)
    for hook, project in zip(hooks_of, (first, second), strict=True):
        [row] = outbox_rows(hooks, hook.webhook_id)
        payload = json.loads(row["payload"])
        assert payload["type"] == "signing_key.rotated" and payload["data"]["kid"] == new.kid
        assert payload["data"]["project_id"] == str(project.project.id) and row["project_id"] == project.project.id
    assert outbox_rows(hooks, unsubscribed.webhook_id) == []


def test_the_periodic_warning_job_reads_the_clients_it_has_not_seen_yet(hooks: Container,
                                                                        receiver: Receiver) -> None:
    signed = sign_up(hooks)
    hook = subscribe(hooks, signed, receiver.url, ("client.secret.expiring",))
    new = hooks.accounts.new_client(CreateClient(project_id=signed.project.id, name="soon", actor="system",
                                                 secret_ttl=12 * 3600))
    hooks.app.save(new.client)
    warn_expiring_job(hooks)  # catches the clients model up itself
    [row] = outbox_rows(hooks, hook.webhook_id)
    assert json.loads(row["payload"])["data"] == {"client_id": new.client.client_id, "days": 1, "actor": "system",
                                                  "project_id": str(signed.project.id),
                                                  "secret_expires_at": new.client.secret_expires_at.isoformat()}


def test_workers_racing_for_one_notification_deliver_it_once(hooks: Container, receiver: Receiver) -> None:
    signed = sign_up(hooks)
    hook = subscribe(hooks, signed, receiver.url, ("member.added",))
    add_member(hooks, signed)
    catch_up(hooks)
    [row] = outbox_rows(hooks, hook.webhook_id)
    start = threading.Barrier(6)

    def race() -> str | None:
        start.wait()
        return deliver(hooks, str(row["id"]))

    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(lambda _: race(), range(6)))
    assert outcomes.count("delivered") == 1 and outcomes.count(None) == 5
    assert receiver.ids() == [str(row["id"])]

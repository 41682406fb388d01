"""What a notification is (event mapping on real domain events), how it is signed (the Standard Webhooks test
vector), the retry schedule, expiry warnings, and the SSRF guard's delivery-time check after DNS resolution."""

import socket
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from uuid import uuid4

import pytest
from cryptography.exceptions import InvalidTag

from application.accounts import SignedUp
from application.authz import Principal
from application.clients import Clients, RotateSecret
from application.members import AddMember, Members, RemoveMember
from domain.keyring import KeyRing
from domain.scopes import ALL_SCOPES
from domain.token import Token, TokenKind
from infrastructure.crypto.hashing import derive_key
from infrastructure.crypto.webhook_secrets import WebhookSecrets, sign, verify
from infrastructure.settings import Settings, SettingsError
from infrastructure.urlguard import UnsafeUrl, address_allowed, resolve
from infrastructure.webhook_delivery import Message, post
from projections.notifications import NOTIFIABLE_TOPICS, derive, notification_id, warning_threshold
from projections.outbox import RETRY_DELAYS, retry_delay
from tests.unit.conftest import SERVER_KEY, World


def person(user_id: Any) -> Principal:
    return Principal(client_id="dashboard", user_id=user_id, project_id=None, scopes=ALL_SCOPES, token_id=uuid4())


def events(world: World, after: int) -> list[Any]:
    return [world.app.mapper.to_domain_event(n)
            for n in world.app.recorder.select_notifications(start=after + 1, limit=10_000)]


@pytest.fixture
def acme(world: World) -> SignedUp:
    return world.sign_up("owner@acme.test")


def test_member_events_become_member_notifications(world: World, acme: SignedUp) -> None:
    other = world.sign_up("bob@acme.test", project_name="Own")
    start = world.position()
    members = Members(app=world.app)
    members.add(AddMember(project_id=acme.project.id, email="bob@acme.test", role="auditor",
                          caller=person(acme.user.id)))
    members.remove(RemoveMember(project_id=acme.project.id, user_id=other.user.id, caller=person(acme.user.id)))
    derived = [derive(e) for e in events(world, start)]
    assert [d.type for d in derived if d] == ["member.added", "member.removed"]
    added = derived[0]
    assert added is not None and added.project_id == acme.project.id
    assert added.data == {"project_id": str(acme.project.id), "user_id": str(other.user.id), "role": "auditor",
                          "actor": f"user:{acme.user.id}"}


def test_client_events_become_client_notifications_without_secrets(world: World, acme: SignedUp) -> None:
    clients = Clients(app=world.app, accounts=world.accounts, clock=world.clock, secrets=world.secrets,
                      minter=world.minter, lifetimes=world.settings.lifetimes)
    start = world.position()
    client_id = acme.client.client.client_id
    rotated = clients.rotate(RotateSecret(project_id=acme.project.id, client_id=client_id, actor="system",
                                          caller_permissions=ALL_SCOPES))
    client = world.app.load(rotated.client.id, type(rotated.client))
    client.revoke(actor="system")
    world.app.save(client)
    derived = [derive(e, client_id) for e in events(world, start)]
    assert [d.type for d in derived if d] == ["client.secret.rotated", "client.revoked"]
    assert all(d and d.data["client_id"] == client_id and d.project_id == acme.project.id for d in derived)
    assert rotated.client_secret not in repr(derived)


def test_refresh_token_reuse_of_a_project_token_is_notified_and_a_dashboard_one_is_not(acme: SignedUp) -> None:
    def reused(project_id: Any) -> Any:
        token = Token(token_id=uuid4(), kind=TokenKind.REFRESH, project_id=project_id, client_id="c", user_id=None,
                      scope="", grant_type="refresh_token", issued_at=acme.user.created_on,
                      expires_at=acme.user.created_on, family_id=uuid4(), parent_id=None, actor="system",
                      family_expires_at=None, value_hash=None, account_version=None)
        token._refresh(refresh_id=uuid4(), access_id=uuid4(), project_id=project_id, actor="system",
                       client_id="c", user_id=None, family_id=token.family_id, used_at=None)
        token.detect_reuse(actor="system", source="203.0.113.9")
        return token.collect_events()[-1]

    derived = derive(reused(acme.project.id))
    assert derived is not None and derived.type == "token.refresh_reuse_detected"
    assert derived.data["family_id"] and derived.project_id == acme.project.id
    assert derive(reused(None)) is None


def test_a_signing_key_activation_goes_to_every_project() -> None:
    ring = KeyRing(actor="system")
    ring.add_key(kid="k1", alg="ES256", public_jwk={}, encrypted_private_key="x", created_at=ring.created_on,
                 actor="system")
    ring.activate(kid="k1", actor="system")
    derived = derive(ring.collect_events()[-1])
    assert derived is not None and derived.type == "signing_key.rotated" and derived.project_id is None
    assert derived.data["kid"] == "k1"


def test_events_of_the_other_branches_are_mapped_by_name() -> None:
    assert "domain.client:Client.ClientSecretExpired" in NOTIFIABLE_TOPICS
    assert "domain.keyring:KeyRing.SigningKeyActivated" in NOTIFIABLE_TOPICS

    class Client:  # stands for domain.client.Client until ClientSecretExpired lands there
        class ClientSecretExpired:
            originator_id = uuid4()
            originator_version = 3
            project_id = uuid4()
            actor = "system"
            timestamp = datetime(2030, 1, 1, tzinfo=UTC)

    derived = derive(Client.ClientSecretExpired(), "klc_1")
    assert derived is not None and derived.type == "client.secret.expired" and derived.data["client_id"] == "klc_1"


def test_notification_ids_are_deterministic_per_event_and_webhook() -> None:
    hook, other = uuid4(), uuid4()
    assert notification_id("a:1", hook) == notification_id("a:1", hook)
    assert len({notification_id("a:1", hook), notification_id("a:1", other), notification_id("a:2", hook)}) == 3


def test_the_standard_webhooks_signature_test_vector() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    signature = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert verify(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body, f"v1,bogus {signature}")
    assert not verify(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265331, body, signature)


def test_a_secret_opens_only_with_its_webhook_id_and_the_server_key() -> None:
    secrets = WebhookSecrets(derive_key(SERVER_KEY, "keyledger webhook secret encryption v1"))
    hook = uuid4()
    new = secrets.new(hook)
    assert new.secret.startswith("whsec_") and new.secret not in new.encrypted and new.hint.endswith(new.secret[-4:])
    assert secrets.open(hook, new.encrypted) == new.secret
    with pytest.raises(InvalidTag):
        secrets.open(uuid4(), new.encrypted)
    with pytest.raises(InvalidTag):
        WebhookSecrets(derive_key(b"another server key" * 3, "keyledger webhook secret encryption v1")).open(
            hook, new.encrypted)


def test_retries_last_more_than_a_day_then_stop() -> None:
    assert sum(RETRY_DELAYS) >= 24 * 3600
    assert list(RETRY_DELAYS) == sorted(RETRY_DELAYS)
    assert retry_delay(1) == RETRY_DELAYS[0] and retry_delay(len(RETRY_DELAYS) + 1) is None


@pytest.mark.parametrize(("days_left", "expected"), [(40, None), (30, 30), (12, 30), (7, 7), (5, 7), (0.5, 1),
                                                     (0, None), (-1, None)])
def test_the_tightest_warning_threshold(days_left: float, expected: int | None) -> None:
    assert warning_threshold(days_left, (30, 7, 1)) == expected


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
                                     "100.64.0.1", "0.0.0.0", "224.0.0.1", "240.0.0.1", "::1", "fe80::1", "fc00::1",
                                     "::ffff:127.0.0.1", "ff02::1"])
def test_internal_addresses_are_refused(address: str) -> None:
    assert not address_allowed(address)


def test_public_addresses_are_allowed() -> None:
    assert address_allowed("93.184.216.34") and address_allowed("2606:4700::1111")


def fake_dns(monkeypatch: pytest.MonkeyPatch, answers: list[str]) -> list[str]:
    """Makes the name resolve to each of ``answers`` in turn (a rebinding resolver); returns the names asked."""
    asked: list[str] = []

    def getaddrinfo(host: str, port: int, *_: Any, **__: Any) -> list[Any]:
        asked.append(host)
        address = answers.pop(0)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


def test_a_name_resolving_to_an_internal_address_is_refused_at_delivery(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(monkeypatch, ["10.0.0.5"])
    with pytest.raises(UnsafeUrl, match="forbidden address"):
        resolve("https://rebind.example.com/hook", allow_private=False)


def test_a_delivery_to_a_rebinding_name_is_refused_and_reaches_nobody(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(monkeypatch, ["127.0.0.1"])
    attempt = post("https://rebind.example.com/hook", Message(id="m", body=b"{}", secret="whsec_AAAA"),
                   allow_private=False, timeout=2)
    assert attempt.status_code is None and attempt.error is not None and attempt.error.startswith("refused")


def test_a_delivery_connects_to_the_address_it_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(self.headers["host"])
            self.rfile.read(int(self.headers["content-length"]))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        # The first answer is the one checked; a second resolution would get an unroutable address and fail.
        asked = fake_dns(monkeypatch, ["127.0.0.1", "192.0.2.1"])
        attempt = post(f"http://hooks.internal.test:{port}/x", Message(id="m", body=b"{}", secret="whsec_AAAA"),
                       allow_private=True, timeout=5)
    finally:
        server.shutdown()
        server.server_close()
    assert attempt.status_code == 204 and asked == ["hooks.internal.test"]
    assert seen == [f"hooks.internal.test:{port}"]


def test_the_webhook_settings_are_read_and_checked() -> None:
    read = Settings.from_env({"KEYLEDGER_WEBHOOK_ALLOW_PRIVATE": "true", "KEYLEDGER_WEBHOOK_LEASE": "5"})
    assert read.webhook_allow_private and read.webhook_lease == 5 and read.webhook_timeout == 10
    assert not Settings.from_env({}).webhook_allow_private
    with pytest.raises(SettingsError):
        Settings.from_env({"KEYLEDGER_WEBHOOK_ALLOW_PRIVATE": "perhaps"})
    assert Settings.from_env({"KEYLEDGER_SMTP_URL": "smtp://mail.test:2525"}).smtp_url == "smtp://mail.test:2525"
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"KEYLEDGER_SMTP_URL": "http://user:hunter2@mail.test"})
    assert "hunter2" not in str(raised.value)


@pytest.mark.parametrize("url", ["smtp://user:hunter2@mail.test:abc", "smtps://user:hunter2@:25", "smtp://",
                                 "smtp://user:hunter2@mail.test:99999"])
def test_an_smtp_url_that_cannot_be_read_is_refused_at_start_up(url: str) -> None:
    # Found only at the first mailing, it failed every attempt outside what a mailing records: the notification's
    # lease came back for ever.
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"KEYLEDGER_SMTP_URL": url})
    assert "hunter2" not in str(raised.value)


def test_the_notification_retention_outlasts_the_earliest_expiry_warning() -> None:
    """A warning pruned while its secret is still live would be added again by the next warning scan."""
    assert Settings.from_env({}).notification_retention_days == 90
    assert Settings.from_env({"KEYLEDGER_NOTIFICATION_RETENTION_DAYS": "31"}).notification_retention_days == 31
    with pytest.raises(SettingsError, match="more than 30"):
        Settings.from_env({"KEYLEDGER_NOTIFICATION_RETENTION_DAYS": "30"})


@pytest.mark.parametrize("address", ["64:ff9b::a00:1", "64:ff9b:1::a00:1", "2002:7f00:1::", "2002:a00:1::",
                                     "::ffff:0:7f00:1", "::127.0.0.1", "fec0::1"])
def test_ipv6_forms_that_carry_an_ipv4_address_are_refused(address: str) -> None:
    assert not address_allowed(address)


@pytest.mark.parametrize("url", ["https://hooks.example.com/\u00e9", "https://hooks.example.com/?q=\u00e9",
                                 "https://hooks.example.com/a b", "https://hooks.example.com/\x01"])
def test_urls_must_be_printable_ascii(url: str) -> None:
    with pytest.raises(UnsafeUrl):
        resolve(url, allow_private=True)


def test_an_attempt_is_cut_at_its_total_deadline_and_recorded() -> None:
    """A receiver trickling its answer a byte at a time cannot hold a worker past the timeout."""
    class Trickle(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            for _ in range(40):
                try:
                    self.wfile.write(b"X")
                    self.wfile.flush()
                except OSError:
                    return
                threading.Event().wait(0.1)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        attempt = post(url, Message(id="msg_1", body=b"{}", secret="whsec_" + "A" * 32), allow_private=True,
                       timeout=1.0)
    finally:
        server.shutdown()
    assert attempt.status_code is None and attempt.error

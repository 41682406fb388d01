"""Notifications mailed to a project's owners and admins through a real SMTP server (aiosmtpd) started by the test:
who gets them, the same Message-ID on every attempt, retries kept in PostgreSQL while the server is down."""

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import Message
from typing import Any
from uuid import uuid4

import pytest
from aiosmtpd.controller import Controller

from application.members import AddMember
from infrastructure.bootstrap import Container, Endpoints, build
from infrastructure.mailer import MailUrlError, parse_smtp_url, send
from infrastructure.settings import Settings
from projections.email_outbox import EmailOutbox
from projections.notifications import Derived
from tests.conftest import fresh_database
from tests.integration.support import fresh_email, sign_up
from tests.integration.webhook_support import make_due, owner, webhook_settings
from workers.email import dispatch_email, mail

pytestmark = pytest.mark.integration


class Inbox:
    """aiosmtpd handler keeping every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], Message]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.messages.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 OK"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def smtp_server(port: int) -> Iterator[Inbox]:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def mailing(server_url: str, redis_url: str, settings: Settings, port: int) -> Iterator[Container]:
    smtp = f"smtp://127.0.0.1:{port}?from=alerts@keyledger.test"
    with fresh_database(server_url) as url:
        built = build(webhook_settings(settings, smtp_url=smtp), Endpoints(database_url=url, redis_url=redis_url),
                      migrate=True)
        try:
            yield built
        finally:
            built.close()


def add(container: Container, signed: Any, role: str) -> str:
    other = sign_up(container, email=fresh_email(role))
    container.members_admin.add(AddMember(project_id=signed.project.id, email=other.user.email, role=role,
                                          caller=owner(signed)))
    return other.user.email


def emails(container: Container) -> list[dict[str, Any]]:
    view = container.webhooks_view
    with view.datastore.transaction(commit=False) as curs:
        curs.execute(f"SELECT * FROM {view.datastore.schema}.email_notification ORDER BY created_at, id")
        return [dict(r) for r in curs.fetchall()]


def test_owners_and_admins_get_the_projects_notifications_by_email(mailing: Container, port: int) -> None:
    signed = sign_up(mailing)
    admin = add(mailing, signed, "admin")
    developer = add(mailing, signed, "developer")
    mailing.runner("webhooks").catch_up()
    rows = [r for r in emails(mailing) if r["project_id"] == signed.project.id]
    assert [r["type"] for r in rows] == ["member.added", "member.added"]
    with smtp_server(port) as inbox:
        assert [mail(mailing, str(r["id"])) for r in rows] == ["delivered", "delivered"]
    assert len(inbox.messages) == 2
    for recipients, message in inbox.messages:
        assert sorted(recipients) == sorted([signed.user.email, admin])  # not the developer
        assert developer not in message["To"] and message["From"] == "alerts@keyledger.test"
        assert "member.added" in message["Subject"] and str(signed.project.id) in message.get_payload()
    assert {m["Message-ID"] for _, m in inbox.messages} == {f"<{r['id']}@keyledger>" for r in rows}


def test_a_mail_server_that_is_down_only_delays_the_email(mailing: Container, port: int) -> None:
    signed = sign_up(mailing)
    add(mailing, signed, "auditor")
    mailing.runner("webhooks").catch_up()
    [row] = [r for r in emails(mailing) if r["project_id"] == signed.project.id]
    assert mail(mailing, str(row["id"])) == "pending"  # no SMTP server listening
    [after] = [r for r in emails(mailing) if r["id"] == row["id"]]
    assert after["attempts"] == 1 and after["last_error"] and str(port) not in after["last_error"]
    assert mail(mailing, str(row["id"])) is None  # not due before its backoff
    make_due_emails(mailing)
    assert row["id"] in EmailOutbox(mailing.webhooks_view).due(lease=2)
    with smtp_server(port) as inbox:
        assert mail(mailing, str(row["id"])) == "delivered"
    [(_, message)] = inbox.messages
    assert message["Message-ID"] == f"<{row['id']}@keyledger>"


def make_due_emails(container: Container) -> None:
    make_due(container)
    view = container.webhooks_view
    with view.datastore.transaction(commit=True) as curs:
        curs.execute(f"UPDATE {view.datastore.schema}.email_notification SET next_attempt_at = now() "
                     "WHERE status = 'pending'")


@pytest.fixture
def pair(server_url: str, redis_url: str, settings: Settings, port: int) -> Iterator[tuple[Container, Container]]:
    """Two processes on one fresh database: one without an SMTP server, one with."""
    with fresh_database(server_url) as url:
        endpoints = Endpoints(database_url=url, redis_url=redis_url)
        quiet = build(webhook_settings(settings), endpoints, migrate=True)
        loud = build(webhook_settings(settings, smtp_url=f"smtp://127.0.0.1:{port}"), endpoints)
        try:
            yield quiet, loud
        finally:
            loud.close()
            quiet.close()


def test_without_an_smtp_server_due_emails_are_skipped_for_good(pair: tuple[Container, Container], port: int) -> None:
    """The rows do not depend on the applying process's setting; a worker without SMTP settles them ``skipped``, so
    one with SMTP configured later mails nothing of the past."""
    quiet, loud = pair
    signed = sign_up(quiet)
    add(quiet, signed, "admin")
    quiet.runner("webhooks").catch_up()
    [row] = emails(quiet)
    assert (row["type"], row["status"]) == ("member.added", "pending")
    assert dispatch_email(quiet, None, 10) == 0
    [after] = emails(quiet)
    assert (after["status"], after["last_error"]) == ("skipped", "no SMTP server configured")
    with smtp_server(port) as inbox:
        assert dispatch_email(loud, None, 10) == 0  # nothing due: no broker needed
        assert mail(loud, str(row["id"])) is None
    assert inbox.messages == []


def test_a_process_without_smtp_derives_the_emails_a_worker_with_smtp_sends(pair: tuple[Container, Container],
                                                                            port: int) -> None:
    """Whichever process applies the batch (here an API process without ``KEYLEDGER_SMTP_URL``), the e-mail is
    there for the worker that has it."""
    api, worker = pair
    signed = sign_up(api)
    admin = add(api, signed, "admin")
    api.runner("webhooks").catch_up()
    [row] = emails(worker)
    assert EmailOutbox(worker.webhooks_view).due(lease=30) == [row["id"]]
    assert dispatch_email(api, None, 10) == 0  # a process without SMTP leaves what the worker enqueued
    assert [r["status"] for r in emails(api)] == ["pending"]
    with smtp_server(port) as inbox:
        assert mail(worker, str(row["id"])) == "delivered"
    [(recipients, _)] = inbox.messages
    assert sorted(recipients) == sorted([signed.user.email, admin])


@pytest.mark.parametrize(("age", "status"), [(timedelta(hours=2), "pending"), (timedelta(days=3), "skipped")])
def test_an_email_derived_long_after_its_event_is_not_sent(mailing: Container, age: timedelta, status: str) -> None:
    """A rebuild (or a model stopped for long) derives old events' e-mails settled: people are not mailed old news."""
    signed = sign_up(mailing)
    when = datetime.now(tz=UTC) - age
    derived = Derived(key=f"test:{uuid4()}", type="member.added", project_id=signed.project.id,
                      timestamp=when.isoformat(), data={"user_id": str(uuid4()), "actor": "system"})
    view = mailing.webhooks_view
    with view.datastore.transaction(commit=True) as curs:
        assert view.notify(curs, derived) == 1
        assert view.notify(curs, derived) == 0  # deterministic id: deriving again adds nothing
    [row] = [r for r in emails(mailing) if r["project_id"] == signed.project.id]
    assert row["status"] == status
    assert (row["id"] in EmailOutbox(view).due(lease=0)) is (status == "pending")


@pytest.mark.parametrize("url", ["http://mail.example.com", "smtp://", "smtp://host:notaport"])
def test_bad_smtp_urls_are_refused_without_echoing_them(url: str) -> None:
    with pytest.raises(MailUrlError) as raised:
        parse_smtp_url(url)
    assert "example.com" not in str(raised.value) and "notaport" not in str(raised.value)


def test_smtp_urls_are_read() -> None:
    server = parse_smtp_url("smtps://ops%40x.test:p%40ss@mail.example.com?from=k@x.test&starttls=false")
    assert (server.host, server.port, server.tls, server.user, server.password, server.sender) == (
        "mail.example.com", 465, True, "ops@x.test", "p@ss", "k@x.test")


def test_a_late_worker_cannot_undo_a_delivery(mailing: Container, port: int) -> None:
    signed = sign_up(mailing)
    add(mailing, signed, "admin")
    mailing.runner("webhooks").catch_up()
    [row] = [r for r in emails(mailing) if r["project_id"] == signed.project.id]
    outbox = EmailOutbox(mailing.webhooks_view)
    late = outbox.claim(row["id"], lease=0)  # its lease runs out at once: another worker takes the e-mail over
    assert late is not None
    with smtp_server(port):
        assert mail(mailing, str(row["id"])) == "delivered"
    outbox.record(late, "timed out")  # the first worker's failure arrives after the delivery
    [after] = [r for r in emails(mailing) if r["id"] == row["id"]]
    assert after["status"] == "delivered" and after["delivered_at"] is not None


TRICKLES = {  # what the server sends first, then one line at a time
    "ehlo": (b"220 slow ESMTP\r\n", b"250-still thinking\r\n"),  # a greeting, then an EHLO answer without end
    "greeting": (b"", b"220-still greeting\r\n"),
}


@dataclass
class Trickle:
    """The trickling server's port, and whether the client hung up while the server still had lines to send."""

    port: int
    client_hung_up: bool = False


@contextlib.contextmanager
def trickling_smtp_server(kind: str, lines: int = 40, every: float = 0.25) -> Iterator[Trickle]:
    """A server that answers one line at a time (``TRICKLES``), each well within a socket timeout of a second, and
    hangs up after ``lines`` of them without ever finishing its answer."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    first, line = TRICKLES[kind]
    trickle = Trickle(port=listener.getsockname()[1])

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(first)
            if kind == "ehlo":
                conn.recv(1024)  # EHLO
            for _ in range(lines):
                if stop.wait(every):
                    return
                try:
                    conn.sendall(line)
                except OSError:  # the client shut its socket: the deadline, not this server, ended it
                    trickle.client_hung_up = True
                    return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield trickle
    finally:
        thread.join(30)
        stop.set()
        thread.join(30)
        listener.close()


@pytest.mark.parametrize("kind", ["ehlo", "greeting"])
def test_a_server_answering_a_line_at_a_time_is_cut_at_the_deadline(kind: str) -> None:
    """Each line arrives within the socket timeout, so only a deadline on the whole conversation (the greeting
    included) ends it: the attempt fails as timed out (and is recorded as any failure), and the client hangs up
    while the server still trickles, instead of waiting until the server gives up."""
    with trickling_smtp_server(kind) as trickle, pytest.raises(TimeoutError, match="outlasted"):
        send(parse_smtp_url(f"smtp://127.0.0.1:{trickle.port}"), recipients=["owner@example.com"], subject="s",
             body="b", message_id="<x@keyledger>", timeout=1)
    assert trickle.client_hung_up


def test_a_deadline_that_passes_while_connecting_ends_the_conversation_before_the_greeting(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A slow name lookup or connect uses up the deadline before there is a socket for the timer to shut; the
    greeting that follows is then not waited for, however slowly it trickles."""
    connect = socket.create_connection

    def slow_connect(*args: Any, **kwargs: Any) -> socket.socket:
        time.sleep(1.2)  # past the deadline: as a resolver or a first address that answers late would
        return connect(*args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", slow_connect)
    with trickling_smtp_server("greeting") as trickle, pytest.raises(TimeoutError, match="outlasted"):
        send(parse_smtp_url(f"smtp://127.0.0.1:{trickle.port}"), recipients=["owner@example.com"], subject="s",
             body="b", message_id="<x@keyledger>", timeout=1)
    assert trickle.client_hung_up


def test_a_server_that_hangs_up_on_quit_has_still_accepted_the_message() -> None:
    """The message is accepted once the server answers its data with 250: a QUIT it then drops (or that the deadline
    cuts) changes nothing, so the attempt is not failed and the e-mail not sent again."""
    listener = socket.create_server(("127.0.0.1", 0))
    commands: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn, conn.makefile("rb") as lines:
            conn.sendall(b"220 scripted ESMTP\r\n")
            for line in lines:
                verb = line.split(b" ", 1)[0].strip().upper()
                commands.append(verb)
                if verb == b"QUIT":
                    return  # hung up without an answer
                if verb == b"DATA":
                    conn.sendall(b"354 go on\r\n")
                    for body_line in lines:
                        if body_line == b".\r\n":
                            break
                    commands.append(b"<message>")
                conn.sendall(b"250 accepted\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        send(parse_smtp_url(f"smtp://127.0.0.1:{listener.getsockname()[1]}"), recipients=["owner@example.com"],
             subject="s", body="b", message_id="<x@keyledger>", timeout=5)
    finally:
        thread.join(30)
        listener.close()
    assert commands[-2:] == [b"<message>", b"QUIT"]

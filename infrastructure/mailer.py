"""E-mail through SMTP (``KEYLEDGER_SMTP_URL``): ``smtp://[user:password@]host[:port][?from=...&starttls=true]``, or
``smtps://`` for TLS from the start. Errors never carry the URL (its password stays out of logs and the database)."""

import contextlib
import smtplib
import socket
import ssl
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import parse_qs, unquote, urlsplit

DEFAULT_SENDER = "keyledger@localhost"


class MailUrlError(ValueError):
    """``KEYLEDGER_SMTP_URL`` is malformed (the message never contains it)."""


@dataclass(frozen=True, slots=True)
class MailServer:
    """Where and how to send."""

    host: str
    port: int
    tls: bool
    starttls: bool
    user: str | None
    password: str | None
    sender: str


def parse_smtp_url(url: str) -> MailServer:
    """Reads an SMTP URL (see the module docstring).

    Raises:
        MailUrlError: not ``smtp``/``smtps``, or no host.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise MailUrlError("KEYLEDGER_SMTP_URL is malformed") from None
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise MailUrlError("KEYLEDGER_SMTP_URL must be smtp://host[:port] or smtps://host[:port]")
    query = parse_qs(parts.query)
    tls = parts.scheme == "smtps"
    return MailServer(host=parts.hostname, port=port or (465 if tls else 25), tls=tls,
                      starttls=query.get("starttls", ["false"])[0].lower() == "true",
                      user=unquote(parts.username) if parts.username else None,
                      password=unquote(parts.password) if parts.password else None,
                      sender=query.get("from", [DEFAULT_SENDER])[0])


def send(server: MailServer, *, recipients: list[str], subject: str, body: str, message_id: str,
         timeout: float) -> None:
    """Sends one message to ``recipients`` (raises ``smtplib.SMTPException`` or ``OSError`` on failure).

    ``message_id`` is the same on every attempt of one notification, so a receiving system can recognise a repeat.
    """
    message = EmailMessage()
    message["From"] = server.sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject
    message["Message-ID"] = message_id
    message.set_content(body)
    context = ssl.create_default_context()
    # ``timeout`` bounds each socket operation; a server answering a line at a time, each within it, would hold the
    # worker past the e-mail's lease (another worker then sends it again) and past the job's time limit (the attempt
    # then goes unrecorded, and so on for ever). The whole conversation, from the TLS handshake and the greeting to
    # QUIT, is cut at ``timeout`` by shutting the socket from a timer, and the attempt fails as any other.
    cut = threading.Event()
    smtp = _Conversation(server, context=context, cut=cut, timeout=timeout)
    watchdog = threading.Timer(timeout, _abort, args=(smtp, cut))
    watchdog.daemon = True
    watchdog.start()
    try:
        smtp.connect(server.host, server.port)
        if server.starttls:
            smtp.starttls(context=context)
        if server.user is not None:
            smtp.login(server.user, server.password or "")
        smtp.send_message(message)
    except Exception:
        if cut.is_set():  # whatever the cut made the blocked call raise (a TLS socket's may be no OSError)
            raise TimeoutError("the SMTP conversation outlasted its deadline") from None
        raise
    else:
        with contextlib.suppress(Exception):  # the message is accepted: a QUIT that fails (or is cut) changes nothing
            smtp.quit()
    finally:
        watchdog.cancel()
        smtp.close()


class _Conversation(smtplib.SMTP):
    """An SMTP client whose socket the deadline's timer can shut from the moment it is connected: during an
    ``smtps`` TLS handshake and the greeting, which ``connect`` runs before handing the socket over."""

    def __init__(self, server: MailServer, *, context: ssl.SSLContext, cut: threading.Event, timeout: float) -> None:
        super().__init__(timeout=timeout)  # no host: nothing is connected before the timer runs
        self._host = server.host  # the name TLS checks the certificate against (``starttls`` reads it too)
        self._tls_context = context if server.tls else None
        self._cut = cut

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        """The connected socket, published to ``_abort`` before each step that may block (see ``_published``)."""
        sock = self._published(super()._get_socket(host, port, timeout))
        if self._tls_context is None:
            return sock
        return self._published(self._tls_context.wrap_socket(sock, server_hostname=host))

    def _published(self, sock: socket.socket) -> socket.socket:
        """``sock`` where ``_abort`` shuts it, then a check of the deadline: ``_abort`` marks the cut before it reads
        the socket, so either it shuts this one or the cut is seen here."""
        self.sock = sock
        if self._cut.is_set():
            raise TimeoutError("the SMTP conversation outlasted its deadline")
        return sock


def _abort(smtp: smtplib.SMTP, cut: threading.Event) -> None:
    """Ends a conversation that outlasted its deadline: the blocked read or write fails at once."""
    cut.set()
    sock = smtp.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            # The plain socket's shutdown, also under TLS: ``SSLSocket.shutdown`` would unwrap the connection under
            # the thread blocked in it.
            socket.socket.shutdown(sock, socket.SHUT_RDWR)

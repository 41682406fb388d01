"""An insert whose connection is lost after PostgreSQL committed it: the recorder's retry finds its own events.

A real PostgreSQL behind a TCP relay that, once armed, cuts the connection carrying the event store's insert as soon
as the server has answered its execution in full (its ReadyForQuery), before the client reads the answer: the commit
happened and the client saw the connection drop, as on a network failure or a server restart at that instant.
"""

import socket
import struct
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from application.store import Keyledger
from domain.project import Project
from infrastructure.bootstrap import Container
from infrastructure.postgres import eventsourcing_env

pytestmark = pytest.mark.integration

INSERT_FUNCTION = b"keyledger_events_insert"  # named in the insert's Parse message (its statement's text)
READY_FOR_QUERY = b"Z"
COMPLETIONS = (b"C", b"E")  # CommandComplete, ErrorResponse


class CuttingRelay:
    """Relays TCP connections to PostgreSQL (over TCP, or its Unix socket when ``host`` is a directory: the embedded
    server's); ``arm`` makes it cut the next connection that sends the insert's statement, once the server's answer
    to it is complete, without passing that answer on."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._armed = threading.Event()
        self._sockets: list[socket.socket] = []
        self.cuts = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self) -> None:
        self._armed.set()

    def close(self) -> None:
        """Stops accepting (a shutdown wakes the thread waiting in ``accept``) and ends every relayed connection."""
        for sock in (self._listener, *self._sockets):
            _cut(sock)

    def _open(self) -> socket.socket:
        host, port = self._target
        if not host.startswith("/"):
            return socket.create_connection((host, port))
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(f"{host}/.s.PGSQL.{port}")
        return sock

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = self._open()
            except OSError:
                client.close()
                continue
            self._sockets += [client, server]
            marked = threading.Event()  # this connection sent the insert while armed
            threading.Thread(target=self._upstream, args=(client, server, marked), daemon=True).start()
            threading.Thread(target=self._downstream, args=(server, client, marked), daemon=True).start()

    def _upstream(self, client: socket.socket, server: socket.socket, marked: threading.Event) -> None:
        tail = b""  # the end of the previous chunk: the name may straddle two
        while chunk := _receive(client):
            if self._armed.is_set() and INSERT_FUNCTION in tail + chunk:
                self._armed.clear()
                marked.set()
            tail = chunk[-len(INSERT_FUNCTION):]
            if not _send(server, chunk):
                break
        _cut(server)

    def _downstream(self, server: socket.socket, client: socket.socket, marked: threading.Event) -> None:
        """Passes the server's messages on (type byte, length, body: no SSL, see the URL). Once the connection is
        marked, an answer is held until its ReadyForQuery: one that completed a statement (CommandComplete, or an
        ErrorResponse) is the insert's, and is cut; another (the statement's preparation) is passed on."""
        messages, held = _Messages(server), []
        while message := messages.next():
            if not marked.is_set():
                if not _send(client, message):
                    break
                continue
            held.append(message)
            if message[:1] != READY_FOR_QUERY:
                continue
            if any(m[:1] in COMPLETIONS for m in held):
                self.cuts += 1
                for end in (client, server):
                    _cut(end)
                return
            if not _send(client, b"".join(held)):
                break
            held = []
        _cut(client)


class _Messages:
    """The protocol messages a socket receives, whole."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = b""

    def next(self) -> bytes:
        """The next message, or b"" once the socket is closed."""
        if not self._fill(5):
            return b""
        size = 1 + struct.unpack("!i", self._buffer[1:5])[0]
        if not self._fill(size):
            return b""
        message, self._buffer = self._buffer[:size], self._buffer[size:]
        return message

    def _fill(self, size: int) -> bool:
        while len(self._buffer) < size:
            chunk = _receive(self._sock)
            if not chunk:
                return False
            self._buffer += chunk
        return True


def _cut(sock: socket.socket) -> None:
    """Ends the connection at once: a shutdown reaches the peer even while another thread waits in ``recv``."""
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def _send(sock: socket.socket, data: bytes) -> bool:
    """Whether ``data`` went out (the other side, or ``CuttingRelay.close``, may have ended the connection)."""
    try:
        sock.sendall(data)
    except OSError:
        return False
    return True


def _receive(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


@contextmanager
def relayed_store(database_url: str) -> Iterator[tuple[Keyledger, CuttingRelay]]:
    """The test database's event store through a ``CuttingRelay`` (one connection: the retry opens a new one)."""
    info = conninfo_to_dict(database_url)
    relay = CuttingRelay(str(info.get("host") or "127.0.0.1"), int(info.get("port") or 5432))
    url = make_conninfo(database_url, host="127.0.0.1", port=str(relay.port), sslmode="disable",
                        gssencmode="disable")
    app = Keyledger(env=eventsourcing_env(url, pool_size=1, create_table=False))
    try:
        yield app, relay
    finally:
        app.close()
        relay.close()


def new_project() -> Project:
    owner = uuid.uuid4()
    return Project(project_id=uuid.uuid4(), name="relayed", owner_id=owner, actor=f"user:{owner}")


def test_an_insert_committed_before_its_connection_was_lost_is_answered_with_its_ids(
        container: Container, database_url: str) -> None:
    with relayed_store(database_url) as (app, relay):
        events = [app.mapper.to_stored_event(e) for e in new_project().collect_events()]
        relay.arm()
        ids = app.recorder.insert_events(events)
        assert relay.cuts == 1  # the first attempt's answer never arrived
        stored = container.app.recorder.select_notifications(start=ids[0], limit=1)
        assert [(n.id, n.originator_id, n.state) for n in stored] == \
            [(ids[0], events[0].originator_id, events[0].state)]  # written once, by that attempt


def test_a_lost_insert_whose_retry_meets_another_writers_events_still_conflicts(
        container: Container, database_url: str) -> None:
    """The retry conflicts with events that are not this call's: the stream moved, the decision must be taken
    again (nothing of this call's was stored)."""
    with relayed_store(database_url) as (app, relay):
        project = new_project()
        theirs = [app.mapper.to_stored_event(e) for e in project.collect_events()]
        container.app.recorder.insert_events(theirs)
        mine = [StoredEvent(originator_id=e.originator_id, originator_version=e.originator_version, topic=e.topic,
                            state=e.state.replace(b"relayed", b"another")) for e in theirs]
        relay.arm()
        with pytest.raises(IntegrityError):
            app.recorder.insert_events(mine)
        assert relay.cuts == 1

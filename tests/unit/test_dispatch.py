"""The accepting process of ``serve --workers N`` (``infrastructure.dispatch``), on real sockets: it takes
connections once every API process is ready, hands each to the one with the fewest open that can take it, and an
API process serves what it is handed and reports each connection's end."""

import asyncio
import contextlib
import resource
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from infrastructure.dispatch import (
    _DESCRIPTORS_PER_PROCESS,
    CLOSED,
    CONNECTION,
    READY,
    Dispatcher,
    HandedConnections,
    channel_pair,
)
from infrastructure.serving import listening_socket


@pytest.fixture
def pairs() -> list[tuple[socket.socket, socket.socket]]:
    """The channels of two API processes: (the accepting process's end, the API process's end)."""
    return [channel_pair() for _ in range(2)]


@pytest.fixture
def dispatcher(pairs: list[tuple[socket.socket, socket.socket]]) -> Iterator[tuple[Dispatcher, int,
                                                                                    list[socket.socket]]]:
    """A dispatcher for two API processes on a free port; yields it, its port and the API processes' ends."""
    listener = listening_socket("127.0.0.1", 0)
    port = listener.getsockname()[1]
    yield Dispatcher(listener, [ours for ours, _ in pairs]), port, [theirs for _, theirs in pairs]
    listener.close()
    for ours, theirs in pairs:
        ours.close()
        theirs.close()


def handed(channel: socket.socket, wanted: int) -> list[socket.socket]:
    """The connections handed over on an API process's end (``wanted`` of them)."""
    connections = []
    channel.settimeout(5)
    while len(connections) < wanted:
        data, fds, _, _ = socket.recv_fds(channel, 1, 1)
        assert data == CONNECTION and len(fds) == 1
        connections.append(socket.socket(fileno=fds[0]))
    return connections


def connect(port: int, dispatcher: Dispatcher, count: int) -> list[socket.socket]:
    clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(count)]
    before = sum(dispatcher.open_connections)
    while sum(dispatcher.open_connections) < before + count:
        assert dispatcher.step(timeout=5)
    return clients


def test_nothing_is_handed_over_until_every_api_process_is_ready(dispatcher) -> None:
    dispatch, port, ends = dispatcher
    ends[0].send(READY)
    assert dispatch.step(timeout=5)
    assert not dispatch.accepting
    early = socket.create_connection(("127.0.0.1", port), timeout=5)  # waits in the backlog
    assert dispatch.step(timeout=0.2)
    assert dispatch.open_connections == [0, 0]
    ends[1].send(READY)
    while dispatch.open_connections == [0, 0]:
        assert dispatch.step(timeout=5)
    assert dispatch.open_connections == [1, 0]
    assert handed(ends[0], 1)[0].getpeername() == early.getsockname()
    early.close()


def test_an_api_process_whose_channel_is_full_is_passed_over(dispatcher, pairs) -> None:
    dispatch, port, ends = dispatcher
    for end in ends:
        end.send(READY)
    while not dispatch.accepting:
        assert dispatch.step(timeout=5)
    ours = pairs[0][0]
    with contextlib.suppress(BlockingIOError):
        while True:  # the first API process's hand-offs left unread until its channel is full
            ours.send(b"\0" * 65536)
    clients = connect(port, dispatch, 2)
    assert dispatch.open_connections == [0, 2]  # not kept waiting on the first, though it had fewer
    assert len(handed(ends[1], 2)) == 2
    for sock in clients:
        sock.close()


def test_each_connection_goes_to_the_api_process_with_the_fewest_open(dispatcher) -> None:
    dispatch, port, ends = dispatcher
    for end in ends:
        end.send(READY)
    while not dispatch.accepting:
        assert dispatch.step(timeout=5)
    clients = connect(port, dispatch, 8)
    assert dispatch.open_connections == [4, 4]
    first, second = handed(ends[0], 4), handed(ends[1], 4)
    # Each handed socket is the server side of one of the clients' connections.
    assert sorted(c.getpeername() for c in first + second) == sorted(c.getsockname() for c in clients)

    ends[0].send(CLOSED * 3)  # the first API process ended three of its connections
    while dispatch.open_connections != [1, 4]:
        assert dispatch.step(timeout=5)
    clients += connect(port, dispatch, 3)
    assert dispatch.open_connections == [4, 4]
    assert len(handed(ends[0], 3)) == 3
    for sock in clients + first + second:
        sock.close()


def test_the_dispatcher_stops_when_an_api_process_is_gone(dispatcher) -> None:
    dispatch, _, ends = dispatcher
    ends[1].close()
    assert not dispatch.step(timeout=5)


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]


async def taking(loop: asyncio.AbstractEventLoop) -> tuple[socket.socket, socket.socket, HandedConnections]:
    """The accepting process's end of a channel, the API process's, and its ``HandedConnections`` echoing what it
    is handed, once it has reported ready."""
    ours, theirs = channel_pair()
    ours.setblocking(False)
    handed = HandedConnections(theirs, Echo, loop)
    handed.start()
    assert await loop.sock_recv(ours, 1) == READY
    return ours, theirs, handed


def test_an_api_process_serves_what_it_is_handed_and_reports_each_end() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        ours, _, handed = await taking(loop)
        with socket.create_server(("127.0.0.1", 0)) as listener:
            client = socket.create_connection(listener.getsockname(), timeout=5)
            server_side, _ = listener.accept()
        with server_side:
            socket.send_fds(ours, [CONNECTION], [server_side.fileno()])
        client.setblocking(False)
        await loop.sock_sendall(client, b"ping")
        assert await asyncio.wait_for(loop.sock_recv(client, 4), 5) == b"ping"
        client.close()
        assert await asyncio.wait_for(loop.sock_recv(ours, 1), 5) == CLOSED
        await loop.sock_sendall(ours, CONNECTION)  # one whose descriptor was lost in transit: counted as ended
        assert await asyncio.wait_for(loop.sock_recv(ours, 1), 5) == CLOSED
        await handed.closed()
        assert await asyncio.wait_for(loop.sock_recv(ours, 1), 5) == b""  # its end closed: no more hand-offs
        ours.close()

    asyncio.run(scenario())


def test_an_api_process_raises_its_descriptor_limit_to_the_hard_limit() -> None:
    """An API process holds a descriptor per connection, and one handed over at the limit is lost in transit: the
    soft limit goes up to the hard one (checked in a child process, whose limits the test may lower)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    expected = hard if hard != resource.RLIM_INFINITY else max(64, _DESCRIPTORS_PER_PROCESS)
    code = ("import resource\n"
            "from infrastructure.dispatch import raise_descriptor_limit\n"
            "_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))\n"
            "raise_descriptor_limit()\n"
            "print(*resource.getrlimit(resource.RLIMIT_NOFILE))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.stdout.split() == [str(expected), str(hard)]


def test_an_api_process_stops_taking_connections_when_the_accepting_process_is_gone() -> None:
    """The channel's end (the accepting process exited) closes the API process's side: it stops reading it (a
    closed channel left in the loop would be reported readable for ever) and keeps serving what it has."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        ours, theirs, handed = await taking(loop)
        ours.close()
        for _ in range(100):
            if theirs.fileno() == -1:
                break
            await asyncio.sleep(0.01)
        assert theirs.fileno() == -1  # closed by the API process once it read the end
        await handed.closed()  # nothing left to close: no error

    asyncio.run(scenario())

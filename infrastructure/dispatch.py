"""Connections shared out evenly among the API processes: one process accepts them, the API processes serve them.

With a listening socket per API process (``SO_REUSEPORT``) the kernel picks the process of each connection by a hash
of its addresses, which balances many connections but not a few: 32 keep-alive connections landed 20 to 12 on two
processes, and the busier one took about half as long again to answer each request (each of its group commits
waited for 20 callers, not 16): the slowest answers were its own. As Node's cluster module does by
default (its round-robin scheduling), one small process accepts every connection and hands the socket itself
(``SCM_RIGHTS`` over a Unix socket pair) to the API process with the fewest open; each API process reports every
connection it closes back over the same pair. The supervisor listens before any process starts (a port in use fails
at once); the accepting process takes connections only once every API process has said it is ready, so until then
they wait in the kernel's backlog.

The hand-off costs a connection a few system calls in each process, once: requests on it go straight to its API
process. The API processes serve no WebSocket (uvicorn's ``ws="none"``): an upgrade would swap the connection's
protocol for one whose end is not reported.
"""

import asyncio
import contextlib
import errno
import logging
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

logger = logging.getLogger(__name__)

READY = b"r"  # API process -> accepting process: serving; send connections
CLOSED = b"x"  # API process -> accepting process: one of its connections ended
CONNECTION = b"c"  # accepting process -> API process: this byte carries a connection
_ACCEPT_RETRY = 0.05  # seconds to wait after an accept failure that is not the client's (out of descriptors)
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# accept() failures that are one connection's own (Linux's accept(2) asks to retry on the network errors): the next.
_CONNECTIONS_OWN = frozenset(getattr(errno, name) for name in (
    "ECONNABORTED", "EPROTO", "EPERM", "ENOPROTOOPT", "EHOSTDOWN", "ENONET", "EHOSTUNREACH", "EOPNOTSUPP",
    "ENETUNREACH", "ENETDOWN") if hasattr(errno, name))
_DESCRIPTORS_PER_PROCESS = 10240  # the limit asked for where the hard one is unlimited (macOS refuses that)
_LOST_IN_TRANSIT = frozenset({errno.EMSGSIZE, *_OUT_OF_RESOURCES})
_WARN_EVERY = 10.0  # seconds between two warnings of the same kind (a persisting failure would flood the log)


def channel_pair() -> tuple[socket.socket, socket.socket]:
    """The accepting process's end and an API process's end of their channel."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)


def raise_descriptor_limit() -> None:
    """Raises this process's soft limit of open descriptors to its hard limit: an API process holds a descriptor per
    connection, and one handed over when the limit is reached is lost in transit (``MSG_CTRUNC``)."""
    try:
        import resource  # noqa: PLC0415 (POSIX only)

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, _DESCRIPTORS_PER_PROCESS)
        if soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ImportError, ValueError, OSError):
        logger.debug("the descriptor limit stays as it is")


class _Throttled:
    """A warning logged at most once per ``_WARN_EVERY`` seconds, with the count of those held back."""

    def __init__(self) -> None:
        self._last = -_WARN_EVERY
        self._held = 0

    def warn(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last < _WARN_EVERY:
            self._held += 1
            return
        held, self._held, self._last = self._held, 0, now
        if held:
            logger.warning(message + " (%d more since the last warning)", *args, held)
        else:
            logger.warning(message, *args)


class Dispatcher:
    """The accepting process's work: once every API process is ready, hands each connection to the API process with
    the fewest open. Ends when an API process's channel closes (the supervisor then stops the rest)."""

    def __init__(self, listener: socket.socket, channels: Sequence[socket.socket]) -> None:
        """``listener``: the server's socket, already listening (see ``serving.listening_socket``)."""
        self._listener = listener
        self._channels = list(channels)
        self._open = [0] * len(self._channels)
        self._ready = [False] * len(self._channels)
        self._accept_failed, self._dropped = _Throttled(), _Throttled()
        self._selector = selectors.DefaultSelector()
        for index, channel in enumerate(self._channels):
            channel.setblocking(False)  # a hand-off never waits for one API process while the others could take it
            self._selector.register(channel, selectors.EVENT_READ, index)

    @property
    def open_connections(self) -> list[int]:
        """How many connections each API process holds, as far as it has reported."""
        return list(self._open)

    @property
    def accepting(self) -> bool:
        """Whether every API process is ready, so connections are taken."""
        return self._selector.get_map().get(self._listener.fileno()) is not None

    def run(self) -> None:
        """Serves until an API process goes away."""
        try:
            while self.step():
                pass
        finally:
            self._selector.close()

    def step(self, timeout: float | None = None) -> bool:
        """Handles what is ready within ``timeout`` seconds (None: waits); False once an API process has gone."""
        for key, _ in self._selector.select(timeout):
            if key.data is None:
                self._accept()
            elif not self._heard(key.data):
                return False
        return True

    def _heard(self, index: int) -> bool:
        try:
            data = self._channels[index].recv(4096)
        except BlockingIOError:
            return True
        except OSError:  # reset: the API process went with hand-offs unread
            data = b""
        if not data:
            logger.warning("API process %d closed its channel; no more connections are handed out", index)
            return False
        self._open[index] = max(0, self._open[index] - data.count(CLOSED))
        if READY in data:
            self._ready[index] = True
            if all(self._ready) and not self.accepting:
                self._listener.setblocking(False)
                self._selector.register(self._listener, selectors.EVENT_READ, None)
        return True

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in _CONNECTIONS_OWN:
                    continue
                # Out of descriptors or memory, or worse: not for every queued connection to find out at full speed.
                self._accept_failed.warn("accepting connections failed: %s", errno.errorcode.get(exc.errno or 0))
                time.sleep(_ACCEPT_RETRY)
                return
            with connection:  # closed here once handed over: the API process holds its own descriptor
                self._hand_over(connection)

    def _hand_over(self, connection: socket.socket) -> None:
        """Hands ``connection`` to the API process with the fewest open that can take it now (one whose channel is
        full, its event loop busy, is passed over); dropped if none can."""
        for index in sorted(range(len(self._open)), key=self._open.__getitem__):
            try:
                socket.send_fds(self._channels[index], [CONNECTION], [connection.fileno()])
            except OSError:
                continue
            self._open[index] += 1
            return
        self._dropped.warn("no API process could take a connection now; it was closed")


def run_dispatcher(listener: socket.socket, channels: Sequence[socket.socket]) -> None:
    """The accepting process's entry point. It leaves Ctrl-C to the supervisor, which stops it with SIGTERM."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    raise_descriptor_limit()
    Dispatcher(listener, channels).run()


class HandedConnections:
    """An API process's end of the channel: serves each connection handed over with ``protocol`` (uvicorn's HTTP
    protocol) on this event loop, and reports each one's end."""

    def __init__(self, channel: socket.socket, protocol: Callable[[], asyncio.Protocol],
                 loop: asyncio.AbstractEventLoop) -> None:
        self._channel = channel
        self._protocol = protocol
        self._loop = loop
        self._pending: set[asyncio.Task[Any]] = set()
        self._taking = False
        self._lost_warning = _Throttled()

    def start(self) -> None:
        """Starts taking connections, and tells the accepting process so."""
        self._channel.setblocking(False)
        self._loop.add_reader(self._channel.fileno(), self._receive)
        self._taking = True
        self._report(READY)

    def close(self) -> None:
        """Takes no more connections (those open are the server's to finish)."""
        if self._taking:
            self._taking = False
            self._loop.remove_reader(self._channel.fileno())
            self._channel.close()

    def _receive(self) -> None:
        while self._taking:
            try:
                data, fds, _flags, _address = socket.recv_fds(self._channel, 1, 1)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in _LOST_IN_TRANSIT:  # macOS and the BSDs fail the receive instead (EMSGSIZE)
                    self._lost()
                    return  # read again on the loop's next turn
                data, fds = b"", []
            if not data:
                self.close()  # the accepting process is gone: no new connections
                return
            if not fds:  # lost in transit (Linux: this process at its descriptor limit): the client saw it closed
                self._lost()
            for fd in fds:
                task = self._loop.create_task(self._serve(socket.socket(fileno=fd)))
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)

    def _lost(self) -> None:
        self._lost_warning.warn("a connection handed over arrived without its descriptor (too many open)")
        self._report(CLOSED)

    async def closed(self) -> None:
        """``close``, then waits for the connections received but not yet set up: uvicorn's shutdown then sees
        every connection this process took."""
        self.close()
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def _serve(self, connection: socket.socket) -> None:
        connection.setblocking(False)
        try:
            await self._loop.connect_accepted_socket(self._counted, connection)
        except OSError:  # gone before it could be served
            connection.close()
            self._report(CLOSED)

    def _counted(self) -> asyncio.Protocol:
        """uvicorn's protocol for one connection, reporting its end to the accepting process."""
        protocol = self._protocol()
        lost = protocol.connection_lost

        def connection_lost(exc: Exception | None) -> None:
            try:
                lost(exc)
            finally:
                self._report(CLOSED)

        protocol.connection_lost = connection_lost  # type: ignore[method-assign]
        return protocol

    def _report(self, message: bytes) -> None:
        with contextlib.suppress(OSError):  # the accepting process is gone, or (never seen) its end is full
            self._channel.send(message)

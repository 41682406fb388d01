"""Several API processes on one port, fed connections by one accepting process (``infrastructure.dispatch``).

uvicorn's own ``--workers`` mode shares one listening socket: whichever process wakes first accepts every
connection waiting in the backlog, so a burst of keep-alive connections (a load balancer's pool, a benchmark) can
land 31 to 1 on two processes and leave a core idle. A listening socket per process (``SO_REUSEPORT``) spreads them
by a hash of their addresses instead, which is even only on average (20 to 12 seen with 32). So one accepting
process hands each connection to the API process with the fewest open.
"""

import gc
import logging
import multiprocessing
import os
import socket
from typing import Any

from infrastructure.bootstrap import PROJECTIONS_ELSEWHERE, TOKEN_RATE_MODELS
from infrastructure.dispatch import channel_pair, raise_descriptor_limit, run_dispatcher
from infrastructure.supervision import supervise, watch_parent

logger = logging.getLogger(__name__)


BACKLOG = 2048


def listening_socket(host: str, port: int) -> socket.socket:
    """The server's TCP socket, listening: a port in use fails here, in the supervisor, before any process starts.
    Connections wait in its backlog until the accepting process takes them (once every API process is ready)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


class _NoUpgradeNoise(logging.Filter):
    """Drops uvicorn's two warnings on every WebSocket upgrade request, which with ``ws="none"`` (keyledger serves no
    WebSocket) any client could send by the thousand to flood the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("Unsupported upgrade request", "No supported WebSocket library"))


def quiet_upgrade_requests() -> None:
    """Keeps uvicorn's warnings about WebSocket upgrade requests out of this process's log."""
    logging.getLogger("uvicorn.error").addFilter(_NoUpgradeNoise())


def freeze_startup_heap() -> None:
    """Puts what starting allocated (the app and its routes, pools, compiled SQL, caches) out of the cyclic garbage
    collector's sight, so that its full collections walk what requests allocate, not the whole process. Seen under
    load without it: full collections of 40 to 80 ms in each API process, one to three a minute, every request of
    the process waiting behind each."""
    gc.collect()
    gc.freeze()


def _serve_one(channel: socket.socket, options: dict[str, Any], parent: int) -> None:
    """One API process: its own application (built by the factory after the process started), serving the
    connections handed over on ``channel``."""
    import uvicorn  # noqa: PLC0415

    from infrastructure.handed_server import HandedServer  # noqa: PLC0415 (uvicorn: only API processes need it)

    watch_parent(parent)  # an orphan would go on serving its connections, and running its projections
    raise_descriptor_limit()
    os.environ[PROJECTIONS_ELSEWHERE] = ",".join(sorted(TOKEN_RATE_MODELS))  # the supervisor runs those
    config = uvicorn.Config("infrastructure.http.app:app_from_env", factory=True, **options)
    quiet_upgrade_requests()
    HandedServer(config, channel).run()


def serve_processes(count: int, *, host: str, port: int, options: dict[str, Any]) -> int:
    """Runs ``count`` API processes and the accepting process until SIGTERM/SIGINT (passed on to them) or until one
    of them exits."""
    if not hasattr(socket, "send_fds"):
        raise RuntimeError("several API processes need to pass sockets between processes (Linux, BSD, macOS)")
    spawn = multiprocessing.get_context("spawn")
    listener = listening_socket(host, port)
    try:
        pairs = [channel_pair() for _ in range(count)]
    except BaseException:
        listener.close()
        raise
    # The API processes first: when one exits, the accepting process follows it, and the log names the first.
    children = [spawn.Process(target=_serve_one, args=(theirs, options, os.getpid()), name=f"keyledger-api-{i}")
                for i, (_, theirs) in enumerate(pairs)]
    children.append(spawn.Process(target=run_dispatcher, args=(listener, [ours for ours, _ in pairs]),
                                  name="keyledger-accept"))

    def handed_over() -> None:  # the children hold their own copies; an API process's end then closes with it
        listener.close()
        for ours, theirs in pairs:
            ours.close()
            theirs.close()

    try:
        return supervise(children, started=handed_over)
    finally:
        handed_over()

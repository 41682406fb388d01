"""Several API processes on one port, each with a listening socket of its own (``SO_REUSEPORT``).

uvicorn's own ``--workers`` mode shares one listening socket: whichever process wakes first accepts every
connection waiting in the backlog, so a burst of keep-alive connections (a load balancer's pool, a benchmark) can
land 31 to 1 on two processes and leave a core idle. With a socket per process the kernel spreads connections over
the processes by their address hash instead.
"""

import gc
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from typing import Any

from infrastructure.bootstrap import PROJECTIONS_ELSEWHERE, TOKEN_RATE_MODELS

logger = logging.getLogger(__name__)


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket that other processes may bind to the same address too."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def freeze_startup_heap() -> None:
    """Puts what starting allocated (the app and its routes, pools, compiled SQL, caches) out of the cyclic garbage
    collector's sight, so that its full collections walk what requests allocate, not the whole process. Seen under
    load without it: full collections of 40 to 80 ms in each API process, one to three a minute, every request of
    the process waiting behind each."""
    gc.collect()
    gc.freeze()


def _exit_with(parent: int) -> None:
    """Stops this API process (gracefully, as SIGTERM does) once its supervisor is gone: an orphan would go on
    sharing the port with whatever starts next."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


def _serve_one(host: str, port: int, options: dict[str, Any], parent: int) -> None:
    """One API process: its own socket, its own application (built by the factory after the process started)."""
    import uvicorn  # noqa: PLC0415

    threading.Thread(target=_exit_with, args=(parent,), name="supervisor-watch", daemon=True).start()
    os.environ[PROJECTIONS_ELSEWHERE] = ",".join(sorted(TOKEN_RATE_MODELS))  # the supervisor runs those
    config = uvicorn.Config("infrastructure.http.app:app_from_env", factory=True, **options)
    uvicorn.Server(config).run(sockets=[reuseport_socket(host, port)])


def serve_processes(count: int, *, host: str, port: int, options: dict[str, Any]) -> int:
    """Runs ``count`` API processes until SIGTERM/SIGINT (passed on to them) or until one of them exits."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise RuntimeError("several API processes need SO_REUSEPORT (Linux, BSD, macOS)")
    spawn = multiprocessing.get_context("spawn")
    children = [spawn.Process(target=_serve_one, args=(host, port, options, os.getpid()), name=f"keyledger-api-{i}")
                for i in range(count)]
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for child in children:
            child.start()
        while not stop.wait(0.5):
            if any(child.exitcode is not None for child in children):
                logger.error("an API process exited; stopping the others")
                break
    finally:
        for child in children:
            if child.is_alive():
                child.terminate()
        for child in children:
            child.join(30)
            if child.is_alive():  # a graceful stop that hangs must not hang the supervisor's exit with it
                child.kill()
                child.join(5)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if stop.is_set() else 1

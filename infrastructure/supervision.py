"""A parent process and its children: ``serve --workers N`` (API processes and the accepting one) and ``worker
--processes N`` (Dramatiq worker processes).

The parent runs until SIGTERM/SIGINT or until a child exits, then stops every child (SIGTERM, then SIGKILL for one
whose graceful stop hangs); a child stops itself, as SIGTERM would, once its parent is gone, so no orphan goes on
serving or consuming jobs beside whatever starts next.
"""

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from infrastructure.signals import stop_on_signals

logger = logging.getLogger(__name__)

STOP_WAIT = 30.0  # seconds the children have, together, to stop gracefully before they are killed
POLL = 0.5  # seconds between two looks at the children


def watch_parent(parent: int) -> None:
    """In a child: a thread that sends this process SIGTERM once ``parent`` is no longer its parent."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def supervise(children: list[Any], *, started: Callable[[], None] = lambda: None) -> int:
    """Starts ``children`` (``multiprocessing`` processes; then calls ``started``) and runs until SIGTERM/SIGINT or
    until one of them exits; then stops them all. The signals are handled from before the first start to after the
    last child is gone: a signal meanwhile neither kills this process nor orphans a child.

    Returns:
        0 after a signal; 1 once a child had exited on its own, even if a signal came while the others stopped (the
        process manager's SIGTERM often does): a crash must not pass for a clean stop.
    """
    failed = False
    with stop_on_signals() as stop:
        try:
            for child in children:
                child.start()
            started()
            while not stop.wait(POLL):
                exited = [f"{child.name} (status {child.exitcode})" for child in children if child.exitcode is not None]
                if exited:
                    logger.error("%s exited; stopping the others", ", ".join(exited))
                    failed = True
                    break
        finally:
            stop_all(children)
    return 1 if failed or not stop.is_set() else 0


def stop_all(children: list[Any], wait: float | None = None) -> None:
    """SIGTERM to every child still running, then waits ``wait`` seconds in all (``STOP_WAIT`` by default) for them
    (SIGKILL for any left)."""
    wait = STOP_WAIT if wait is None else wait
    for child in children:
        if child.is_alive():
            child.terminate()
    deadline = time.monotonic() + wait
    for child in children:
        if child.pid is None:  # never started (an earlier start failed): nothing to join
            continue
        child.join(max(0.0, deadline - time.monotonic()))
        if child.is_alive():  # a graceful stop that hangs must not hang the parent's exit with it
            logger.warning("%s did not stop within %.0f s; killed", child.name, wait)
            child.kill()
            child.join(5)

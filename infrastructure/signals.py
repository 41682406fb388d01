"""A ``threading.Event`` that SIGTERM/SIGINT set, safely.

A Python signal handler runs on the main thread between two bytecodes, wherever that thread happens to be. When it is
inside ``Event.wait`` holding the event's internal lock (entering the wait, or back from a timed-out one), a handler
that calls ``Event.set`` asks for that same lock, which is not reentrant: the main thread waits for itself, and the
process ignores every later signal (seen once: ``serve --workers 2`` hung on SIGTERM, its main thread in
``Event.set`` under ``Event.wait``). So the handler here only writes a byte to a pipe, which takes no lock, and a
relay thread that reads the pipe sets the event.
"""

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def stop_on_signals(*signums: int) -> Iterator[threading.Event]:
    """Sets an event when any of ``signums`` (default SIGTERM and SIGINT) arrives, while the block runs.

    Call it on the main thread (Python installs signal handlers only there). On exit the previous handlers are
    back, and the pipe and the relay thread are gone, whatever happened (a handler that cannot be installed too).

    Yields:
        The event the signals set.
    """
    stop = threading.Event()
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)

    def handle(_signum: int, _frame: object) -> None:
        with suppress(BlockingIOError):  # a full pipe: the relay has its wake-up already
            os.write(write_end, b"\0")

    def relay() -> None:
        if os.read(read_end, 1):  # empty: the write end was closed on exit, no signal came
            stop.set()

    thread = threading.Thread(target=relay, name="signal-relay", daemon=True)
    previous: dict[int, Any] = {}
    try:
        thread.start()
        for signum in signums or STOP_SIGNALS:
            previous[signum] = signal.signal(signum, handle)
        yield stop
    finally:
        try:
            for signum, handler in previous.items():
                # None: a handler installed from C, which Python cannot put back; the default is the safe stand-in
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        finally:
            os.close(write_end)
            if thread.is_alive():
                thread.join()
            os.close(read_end)

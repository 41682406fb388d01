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

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def stop_on_signals(*signums: int) -> Iterator[threading.Event]:
    """Yields an event that any of ``signums`` (default SIGTERM and SIGINT) sets; restores their handlers on exit.

    Call it on the main thread (Python installs signal handlers only there).
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
    thread.start()
    previous = {signum: signal.signal(signum, handle) for signum in signums or STOP_SIGNALS}
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        os.close(write_end)
        thread.join()
        os.close(read_end)

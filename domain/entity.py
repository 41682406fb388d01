"""The base of keyledger's aggregates: their events are stamped by the process's clock, not the host's.

eventsourcing stamps each new event with its class's ``create_timestamp()``, which reads the host's clock. A
keyledger process keeps time by the database's clock instead (``infrastructure.clock``), so that a host whose clock
is off decides as the others do; the events it records are stamped by that clock too. An event's ``timestamp`` is
the audit ledger's ``occurred_at`` and orders its ``since`` and ``until`` filters: with hosts stamping by their own
clocks, a host running ten minutes behind would file the tokens it issues and revokes ten minutes in the past.

The clock is bound for the whole process (``stamp_with``), not passed in: an event is created deep inside an
aggregate's decision, and threading a clock through every ``@event`` method would make it an argument of every
event. A process builds one container, which binds its clock and releases it when closed. A test process may build
several against one database: the newest still open stamps. With none bound, the host's clock does, as eventsourcing
would.
"""

import threading
from collections.abc import Callable
from datetime import UTC, datetime

from eventsourcing.domain import Aggregate

Source = Callable[[], datetime]


class Stamping:
    """A clock bound to stamp events until ``close``; closing it again, or out of order, is harmless."""

    def __init__(self, source: Source) -> None:
        self.source = source

    def close(self) -> None:
        """Stops stamping with this clock: the one bound before it (if still open) stamps again."""
        global _bound  # noqa: PLW0603 (the process-wide binding is this module's purpose)
        with _lock:
            _bound = tuple(stamping for stamping in _bound if stamping is not self)


_lock = threading.Lock()
_bound: tuple[Stamping, ...] = ()  # replaced whole under the lock, read without it


def stamp_with(source: Source) -> Stamping:
    """Stamps every event created from now on in this process with ``source()`` (a timezone-aware UTC datetime),
    until the returned binding is closed."""
    global _bound  # noqa: PLW0603
    stamping = Stamping(source)
    with _lock:
        _bound = (*_bound, stamping)
    return stamping


def event_timestamp() -> datetime:
    """The time a new event happened: the newest bound clock's, or the host's when none is bound."""
    bound = _bound
    return bound[-1].source() if bound else datetime.now(UTC)


class Entity(Aggregate):
    """Base of every aggregate of the domain (see the module)."""

    class Event(Aggregate.Event):
        """An event of an ``Entity``, stamped by ``event_timestamp``."""

        create_timestamp = staticmethod(event_timestamp)

    class Created(Event, Aggregate.Created):
        """An ``Entity``'s first event."""

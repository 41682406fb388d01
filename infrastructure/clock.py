"""The ledger's clock: the database server's, read through this host's.

Every process of a deployment decides on time: whether a token's ``exp`` has passed (validation, introspection),
when a refresh token was used, whether a client secret is still in its grace period, what ``iat`` and ``exp`` a new
token carries. The database decides on time too: the expiry sweep moves tokens by its clock, and the revocation list
drops a revoked token's entry ``workers.expiry.PRUNE_MARGIN`` after the token expired by its clock. A host whose clock
ran more than that margin behind the database's would take such a token, revoked and then pruned, for live again;
one ahead would refuse fresh tokens as expired, and one behind would refuse other hosts' fresh tokens as not yet
valid (``iat`` in its future). NTP makes such skew rare, not impossible (a VM resumed from a snapshot, a container
host without time sync).

So each process keeps time by the database's clock. ``DatabaseClock.calibrate`` reads ``clock_timestamp()`` three
times on one connection already checked out of the pool and in a transaction (no pool wait or BEGIN inside a sample)
and keeps the fastest read, timed on the host's monotonic clock: the database read its clock at that round trip's
midpoint, give or take half of it (under a millisecond on a LAN; a measurement whose best round trip exceeds
``MAX_ROUND_TRIP`` is refused and the last one kept). Between measurements the time is that reading carried forward
on the monotonic clock (``CLOCK_BOOTTIME`` on Linux, which also counts a suspended host's sleep), so the host's wall
clock, stepped by time sync or by hand, changes nothing. A background thread (``start``) measures again every
minute, and at once when a reading finds the wall clock moved against the monotonic one by more than ``STEP`` (a VM
resumed from a snapshot: its monotonic clock stood still while the world moved on). A failed measurement (the
database unreachable) keeps the last one. A host whose clock is off the database's by over ``WARN_OFFSET`` is
logged when first measured and again whenever the offset moves by that much: its time sync wants fixing, even
though keyledger no longer depends on it.
"""

import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime

from projections.failures import FailureStreak

logger = logging.getLogger(__name__)

SAMPLES = 3
INTERVAL = 60.0  # seconds between measurements
STEP = 1.0  # seconds the wall clock may move against the monotonic one before it is measured again at once
MIN_GAP = 1.0  # seconds after a failed measurement before the next (a database away must not busy the thread)
MAX_ROUND_TRIP = 0.25  # seconds: a slower best sample (a stalled host or database) is no measurement
WARN_OFFSET = 1.0  # seconds of skew worth an operator's attention

Read = Callable[[], float]  # the database's clock now, in seconds since the epoch (one round trip)
Session = Callable[[], AbstractContextManager[Read]]  # a connection ready to read it (checked out, transaction begun)


def _boottime() -> float:
    """Linux's CLOCK_BOOTTIME: monotonic, and counting a suspended host's sleep (CLOCK_MONOTONIC stands still)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


MONOTONIC: Callable[[], float] = _boottime if hasattr(time, "CLOCK_BOOTTIME") else time.monotonic


class ClockUncertain(RuntimeError):
    """A measurement whose round trips were all too slow to tell the database's time closely enough."""


class DatabaseClock:
    """The database's clock as this host reads it (see the module). Uncalibrated, it is the host's clock.

    ``wall`` and ``monotonic`` are the host's clocks (injectable so tests can skew and step them); ``now`` and
    ``time`` are what the rest of the process reads: the application's ``Clock`` port and the JWT validator's time
    source.
    """

    def __init__(self, *, wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = MONOTONIC) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self._anchor = wall() - monotonic()  # the wall clock's lead on the monotonic one when last measured
        self._base = self._anchor  # the database's clock's lead on the monotonic one (the host's until measured)
        self._measured_at: float | None = None
        self._warned: float | None = None  # the offset last logged as too large
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def offset(self) -> float:
        """Seconds the database's clock was ahead of the host's when last measured (positive: the host is behind)."""
        return self._base - self._anchor

    def age(self) -> float | None:
        """Seconds since the last measurement (None: never): a stale one means measurements fail."""
        return None if self._measured_at is None else self._monotonic() - self._measured_at

    def time(self) -> float:
        """The database's clock now, in seconds since the epoch: the last measurement carried forward on the
        monotonic clock. A wall clock found stepped against it wakes the measuring thread (a reading never waits)."""
        ticks = self._monotonic()
        if abs(self._wall() - ticks - self._anchor) > STEP and not self._wake.is_set():
            self._wake.set()
        return ticks + self._base

    def now(self) -> datetime:
        """The database's clock now, in UTC."""
        return datetime.fromtimestamp(self.time(), tz=UTC)

    def calibrate(self, session: Session, samples: int = SAMPLES) -> float:
        """Measures the database's clock and adopts the measurement.

        The sample with the shortest round trip wins: the database read its clock within half of it of its
        midpoint. Round trips are timed on the monotonic clock, so a step of the wall clock during a sample cannot
        make it look fastest; the wall clock's lead is taken from the winning sample too, for the same reason.

        Returns:
            The host's offset from the database's clock, in seconds (positive: the host is behind).

        Raises:
            ClockUncertain: every round trip took over ``MAX_ROUND_TRIP`` and an earlier measurement exists (the
                first one is adopted whatever it took: better than the host's clock).
            Exception: whatever ``session`` or its reads raise. Either way the previous measurement stays.
        """
        best: tuple[float, float, float, float] | None = None  # (round trip, database, monotonic start, wall)
        with session() as read:
            for _ in range(max(samples, 1)):
                wall, started = self._wall(), self._monotonic()
                database = read()
                round_trip = self._monotonic() - started
                if best is None or round_trip < best[0]:
                    best = (round_trip, database, started, wall)
        if best is None:  # pragma: no cover - the loop runs at least once
            raise ClockUncertain("no sample")
        round_trip, database, started, wall = best
        if round_trip > MAX_ROUND_TRIP and self._measured_at is not None:
            raise ClockUncertain(f"the fastest of {samples} round trips took {round_trip:.3f} s")
        self._base = database - (started + round_trip / 2)
        self._anchor = wall - started
        self._measured_at = self._monotonic()
        self._wake.clear()  # readings during the measurement compared the wall clock with the old anchor
        self._warn_if_skewed()
        return self.offset

    def _warn_if_skewed(self) -> None:
        """Logs an offset worth fixing the host's time sync for, once until it moves by as much again."""
        if abs(self.offset) < WARN_OFFSET:
            self._warned = None
            return
        if self._warned is not None and abs(self.offset - self._warned) < WARN_OFFSET:
            return
        self._warned = self.offset
        logger.warning("this host's clock is %.1f s %s the database's; keyledger keeps time by the database's clock "
                       "(fix the host's time sync)", abs(self.offset), "behind" if self.offset > 0 else "ahead of")

    def start(self, session: Session, interval: float = INTERVAL) -> None:
        """Measures again every ``interval`` seconds, and when a step is found, in a daemon thread until ``stop``."""
        if self._thread is not None and self._thread.is_alive():
            if not self._stop.is_set():
                return
            self._thread.join()  # a stopped thread still finishing its measurement: let it end first
        self._stop.clear()
        self._wake.clear()
        self._thread = threading.Thread(target=self._loop, args=(session, interval), name="database-clock",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops the background measurements (waits up to 5 s for one in progress)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            if not self._thread.is_alive():
                self._thread = None

    def _loop(self, session: Session, interval: float) -> None:
        """The measuring thread: a failure is logged as a streak (``FailureStreak``) and the last measurement kept."""
        streak = FailureStreak("clock calibration")
        while not self._stop.is_set():
            self._wake.wait(interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.calibrate(session)
            except Exception as exc:  # the database away or too slow: keep the last measurement, try again later
                streak.failed(exc)
                self._stop.wait(MIN_GAP)
            else:
                streak.succeeded()

"""The ledger's clock: the database server's, read through this host's.

Every process of a deployment decides on time: whether a token's ``exp`` has passed (validation, introspection),
when a refresh token was used, whether a client secret is still in its grace period, what ``iat`` and ``exp`` a new
token carries. The database decides on time too: the expiry sweep moves tokens by its clock, and the revocation list
drops a revoked token's entry ``workers.expiry.PRUNE_MARGIN`` after the token expired by its clock. A host whose clock
ran more than that margin behind the database's would take such a token, revoked and then pruned, for live again;
one ahead would refuse fresh tokens as expired, and one behind would refuse other hosts' fresh tokens as not yet
valid (``iat`` in its future). NTP makes such skew rare, not impossible (a VM resumed from a snapshot, a container
host without time sync).

So each process keeps time by the database's clock: ``DatabaseClock`` measures how far the host's clock is from the
database's (``calibrate``: three reads of ``clock_timestamp()`` on one connection already checked out of the pool and
in a transaction, so no pool wait or BEGIN sits inside a sample; the fastest read's midpoint, timed on the monotonic
clock; an error of at most half that round trip, under a millisecond on a LAN) and adds that offset to every reading
of the host's clock. It measures again every minute in a background thread (``start``), and at once when a reading
finds the host's clock stepped against the monotonic clock by more than ``STEP`` (time sync stepping it, a VM resumed
from a snapshot): a step is followed within milliseconds, a drift within a minute. A failed measurement (the database
unreachable) keeps the last offset. An offset over ``WARN_OFFSET`` is logged when first measured and again whenever
it moves by that much: the host's time sync wants fixing even though keyledger no longer depends on it.
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
STEP = 1.0  # seconds the host's clock may move against the monotonic clock before it is measured again at once
MIN_GAP = 1.0  # seconds between two measurements, whatever wakes the thread (a database away must not busy it)
WARN_OFFSET = 1.0  # seconds of skew worth an operator's attention

Read = Callable[[], float]  # the database's clock now, in seconds since the epoch (one round trip)
Session = Callable[[], AbstractContextManager[Read]]  # a connection ready to read it (checked out, transaction begun)


class DatabaseClock:
    """The database's clock as this host reads it (see the module). Uncalibrated, it is the host's clock.

    ``wall`` and ``monotonic`` are the host's clocks (injectable so tests can skew and step them); ``now`` and
    ``time`` are what the rest of the process reads: the application's ``Clock`` port and the JWT validator's time
    source.
    """

    def __init__(self, *, wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self._offset = 0.0
        self._anchor = wall() - monotonic()  # the wall clock's lead on the monotonic one when last measured
        self._measured_at: float | None = None
        self._warned: float | None = None  # the offset last logged as too large
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def offset(self) -> float:
        """Seconds added to the host's clock to read the database's (positive: the host is behind)."""
        return self._offset

    def age(self) -> float | None:
        """Seconds since the offset was last measured (None: never): a stale one means measurements fail."""
        return None if self._measured_at is None else self._monotonic() - self._measured_at

    def time(self) -> float:
        """The database's clock now, in seconds since the epoch. A host clock found stepped wakes the measuring
        thread (a reading never waits for it)."""
        wall = self._wall()
        if abs(wall - self._monotonic() - self._anchor) > STEP:
            self._wake.set()
        return wall + self._offset

    def now(self) -> datetime:
        """The database's clock now, in UTC."""
        return datetime.fromtimestamp(self.time(), tz=UTC)

    def calibrate(self, session: Session, samples: int = SAMPLES) -> float:
        """Measures the offset and adopts it.

        The sample with the shortest round trip wins: its midpoint is the likeliest instant at which the database
        read its clock. Round trips are timed on the monotonic clock, so a step of the wall clock during a sample
        cannot make it look fastest.

        Returns:
            The offset adopted, in seconds.

        Raises:
            Exception: whatever ``session`` or its reads raise; the previous offset stays.
        """
        best: tuple[float, float] | None = None  # (round trip, offset)
        with session() as read:
            for _ in range(samples):
                wall, started = self._wall(), self._monotonic()
                database = read()
                round_trip = self._monotonic() - started
                if best is None or round_trip < best[0]:
                    best = (round_trip, database - (wall + round_trip / 2))
        assert best is not None
        self._offset = best[1]
        self._anchor = self._wall() - self._monotonic()
        self._measured_at = self._monotonic()
        self._warn_if_skewed()
        return self._offset

    def _warn_if_skewed(self) -> None:
        """Logs an offset worth fixing the host's time sync for, once until it moves by as much again."""
        if abs(self._offset) < WARN_OFFSET:
            self._warned = None
            return
        if self._warned is not None and abs(self._offset - self._warned) < WARN_OFFSET:
            return
        self._warned = self._offset
        logger.warning("this host's clock is %.1f s %s the database's; keyledger keeps time by the database's clock "
                       "(fix the host's time sync)", abs(self._offset), "behind" if self._offset > 0 else "ahead of")

    def start(self, session: Session, interval: float = INTERVAL) -> None:
        """Measures again every ``interval`` seconds, and when a step is found, in a daemon thread until ``stop``."""
        if self._thread is not None and self._thread.is_alive():
            return
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
        """The measuring thread: a failure is logged as a streak (``FailureStreak``) and the last offset kept."""
        streak = FailureStreak("clock calibration")
        while not self._stop.is_set():
            self._wake.wait(interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.calibrate(session)
            except Exception as exc:  # the database away: keep the last offset, measure again later
                streak.failed(exc)
            else:
                streak.succeeded()
            self._stop.wait(MIN_GAP)

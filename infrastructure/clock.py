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
database's (``calibrate``: three round trips, the fastest one's midpoint, an error of at most half its round trip,
well under a millisecond on a LAN) and adds that offset to every reading of the host's clock. It measures again every
minute in a background thread (``start``), so a host clock that is stepped or drifts is followed within a minute. A
failed measurement (the database unreachable) keeps the last offset. An offset over ``WARN_OFFSET`` is logged when
first measured and again whenever it moves by that much: the host's time sync wants fixing even though keyledger
no longer depends on it.
"""

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from projections.failures import FailureStreak

logger = logging.getLogger(__name__)

SAMPLES = 3
INTERVAL = 60.0  # seconds between measurements
WARN_OFFSET = 1.0  # seconds of skew worth an operator's attention

Read = Callable[[], float]  # the database's clock now, in seconds since the epoch (one round trip)


class DatabaseClock:
    """The database's clock as this host reads it (see the module). Uncalibrated, it is the host's clock.

    ``wall`` is the host's clock (injectable so tests can skew it); ``now`` and ``time`` are what the rest of the
    process reads: the application's ``Clock`` port and the JWT validator's time source.
    """

    def __init__(self, *, wall: Callable[[], float] = time.time) -> None:
        self._wall = wall
        self._offset = 0.0
        self._warned: float | None = None  # the offset last logged as too large
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def offset(self) -> float:
        """Seconds added to the host's clock to read the database's (positive: the host is behind)."""
        return self._offset

    def time(self) -> float:
        """The database's clock now, in seconds since the epoch."""
        return self._wall() + self._offset

    def now(self) -> datetime:
        """The database's clock now, in UTC."""
        return datetime.fromtimestamp(self.time(), tz=UTC)

    def calibrate(self, read: Read, samples: int = SAMPLES) -> float:
        """Measures the offset with ``samples`` round trips to ``read`` and adopts it; returns it. The sample with
        the shortest round trip wins: its midpoint is the likeliest instant at which the database read its clock.
        Raises what ``read`` raises (the previous offset stays)."""
        best: tuple[float, float] | None = None  # (round trip, offset)
        for _ in range(samples):
            before = self._wall()
            database = read()
            after = self._wall()
            sample = (after - before, database - (before + after) / 2)
            if best is None or sample[0] < best[0]:
                best = sample
        assert best is not None
        self._offset = best[1]
        self._warn_if_skewed()
        return self._offset

    def _warn_if_skewed(self) -> None:
        if abs(self._offset) < WARN_OFFSET:
            self._warned = None
            return
        if self._warned is not None and abs(self._offset - self._warned) < WARN_OFFSET:
            return
        self._warned = self._offset
        logger.warning("this host's clock is %.1f s %s the database's; keyledger keeps time by the database's clock "
                       "(fix the host's time sync)", abs(self._offset), "behind" if self._offset > 0 else "ahead of")

    def start(self, read: Read, interval: float = INTERVAL) -> None:
        """Measures again every ``interval`` seconds in a daemon thread, until ``stop``."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, args=(read, interval), name="database-clock", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops the background measurements."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _loop(self, read: Read, interval: float) -> None:
        streak = FailureStreak("clock calibration")
        while not self._stop.wait(interval):
            try:
                self.calibrate(read)
            except Exception as exc:  # the database away: keep the last offset, measure again later
                streak.failed(exc)
            else:
                streak.succeeded()

"""A background loop's failures in a row, logged without flooding the log during an outage."""

import logging
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)


class FailureStreak:
    """The failures in a row of one background loop (a projection runner, the head watcher).

    The first failure is logged with its traceback, and so is the first of each other type within the streak (an
    outage that turns into a bug must not hide the bug; one that alternates between two errors logs each once).
    While the streak lasts, one line at most every ``every`` seconds says it goes on: during a database outage each
    loop fails every few seconds, and a traceback each time buried everything else in the log (five loops per
    process, for as long as the outage lasted). The first success after a streak says that it ended and how long it
    was.
    """

    def __init__(self, what: str, *, every: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._what = what
        self._every = every
        self._clock = clock
        self._count = 0
        self._logged_at = 0.0
        self._kinds: set[type[BaseException]] = set()  # the types logged with a traceback in this streak

    @property
    def count(self) -> int:
        """Failures since the last success."""
        return self._count

    def failed(self, exc: BaseException) -> None:
        """Records a failure; logs it with its traceback if it is the streak's first of its type, else in one line
        if the last line is ``every`` seconds old."""
        self._count += 1
        now = self._clock()
        if type(exc) not in self._kinds:
            self._kinds.add(type(exc))
            logger.error("%s failed; retrying", self._what, exc_info=exc)
        elif now - self._logged_at >= self._every:
            logger.warning("%s still failing (%d attempts in a row, the last: %s); retrying", self._what,
                           self._count, type(exc).__name__)
        else:
            return
        self._logged_at = now

    def succeeded(self) -> None:
        """Records a success; logs the end of a streak."""
        if self._count:
            logger.warning("%s recovered after %d failed attempt%s", self._what, self._count,
                           "" if self._count == 1 else "s")
            self._count = 0
            self._kinds.clear()

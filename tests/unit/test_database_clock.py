"""The database's clock as a host reads it (``infrastructure.clock``)."""

import logging
import threading
from collections.abc import Callable

import pytest

from infrastructure.clock import DatabaseClock


class Host:
    """A host's clock and a database whose clock is ``ahead`` of it; each round trip takes ``(out, back)``
    milliseconds: the database reads its clock ``out`` after the host's first reading, ``back`` before its second."""

    def __init__(self, ahead: float, legs: list[tuple[int, int]]) -> None:
        self.t = 1_800_000_000.0
        self.ahead = ahead
        self.legs = iter(legs)

    def wall(self) -> float:
        return self.t

    def read(self) -> float:
        out, back = next(self.legs)
        self.t += out / 1000
        database = self.t + self.ahead
        self.t += back / 1000
        return database


def test_uncalibrated_it_is_the_hosts_clock() -> None:
    clock = DatabaseClock(wall=lambda: 1_800_000_000.5)
    assert clock.offset == 0
    assert clock.time() == 1_800_000_000.5
    assert clock.now().timestamp() == 1_800_000_000.5


def test_calibration_adopts_the_fastest_round_trips_midpoint() -> None:
    host = Host(ahead=600.0, legs=[(30, 2), (1, 1), (2, 20)])  # the others' midpoints are 14 and 9 ms off
    clock = DatabaseClock(wall=host.wall)
    assert clock.calibrate(host.read) == pytest.approx(600.0, abs=1e-6)
    assert clock.time() - host.t == pytest.approx(600.0, abs=1e-6)


def test_a_failed_calibration_keeps_the_last_offset() -> None:
    host = Host(ahead=-42.0, legs=[(1, 1)] * 3)
    clock = DatabaseClock(wall=host.wall)
    clock.calibrate(host.read)

    def unreachable() -> float:
        raise ConnectionError("database away")

    with pytest.raises(ConnectionError):
        clock.calibrate(unreachable)
    assert clock.offset == pytest.approx(-42.0, abs=1e-6)


def test_a_skew_worth_fixing_is_logged_once_until_it_moves(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="infrastructure.clock")
    offsets = iter([0.2, 300.0, 300.3, 299.8, 302.0, 0.1, 300.0])
    clock = DatabaseClock(wall=lambda: 1_800_000_000.0)
    logged = []
    for offset in offsets:
        clock.calibrate(lambda o=offset: 1_800_000_000.0 + o, samples=1)  # type: ignore[misc]
        logged.append(len(caplog.records))
    assert logged == [0, 1, 1, 1, 2, 2, 3]  # 300 s behind; moved by 2 s; back in sync; behind again
    assert "300.0 s behind the database's" in caplog.records[0].getMessage()


def test_it_measures_again_in_the_background_until_stopped() -> None:
    offsets = iter([5.0, 7.0])
    measured = threading.Event()

    def read(offset: Callable[[], float] = lambda: next(offsets, 7.0)) -> float:
        value = 1_800_000_000.0 + offset()
        measured.set()
        return value

    clock = DatabaseClock(wall=lambda: 1_800_000_000.0)
    clock.calibrate(read, samples=1)
    assert clock.offset == 5.0
    measured.clear()
    clock.start(read, interval=0.01)
    try:
        assert measured.wait(timeout=10)  # a liveness bound, not a timing assertion
    finally:
        clock.stop()
    assert clock.offset == 7.0

"""The database's clock as a host reads it (``infrastructure.clock``)."""

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator

import pytest

from infrastructure.clock import ClockUncertain, DatabaseClock


class Host:
    """A host's clocks and a database whose clock is ``ahead`` of the host's wall clock. Each read takes ``(out,
    back)`` milliseconds: the database reads its clock ``out`` after the request leaves, the answer arrives ``back``
    after that; a third number steps the wall clock by that many seconds while the database reads. ``step`` moves
    the wall clock alone, as time sync stepping it would."""

    def __init__(self, ahead: float, legs: list[tuple[int, ...]]) -> None:
        self.t = 1_000.0  # the monotonic clock
        self.lead = 1_800_000_000.0  # the wall clock's lead on it
        self.ahead = ahead
        self.legs = iter(legs)
        self.sessions = 0
        self.measured = threading.Event()  # set as each session ends

    def wall(self) -> float:
        return self.t + self.lead

    def monotonic(self) -> float:
        return self.t

    def step(self, seconds: float) -> None:
        self.lead += seconds
        self.ahead -= seconds

    def database(self) -> float:
        return self.wall() + self.ahead

    def read(self) -> float:
        out, back, *step = next(self.legs)
        self.t += out / 1000
        database = self.database()
        self.step(step[0] if step else 0.0)
        self.t += back / 1000
        return database

    @contextlib.contextmanager
    def session(self) -> Iterator[Callable[[], float]]:
        self.sessions += 1
        yield self.read
        self.measured.set()

    def clock(self) -> DatabaseClock:
        return DatabaseClock(wall=self.wall, monotonic=self.monotonic)


def test_uncalibrated_it_is_the_hosts_clock() -> None:
    host = Host(ahead=600.0, legs=[])
    clock = host.clock()
    assert clock.offset == 0
    assert clock.age() is None
    assert clock.time() == host.wall()
    assert clock.now().timestamp() == host.wall()


def test_calibration_adopts_the_fastest_round_trips_midpoint() -> None:
    host = Host(ahead=600.0, legs=[(30, 2), (1, 1), (2, 20)])  # the others' midpoints are 14 and 9 ms off
    clock = host.clock()
    assert clock.calibrate(host.session) == pytest.approx(600.0, abs=1e-6)
    assert clock.time() == pytest.approx(host.database(), abs=1e-6)
    assert clock.age() == 0
    assert host.sessions == 1  # one connection for the three reads: no pool wait inside a sample


def test_a_wall_clock_step_during_a_sample_changes_nothing() -> None:
    """Round trips are timed, and the time carried forward, on the monotonic clock: time sync stepping the wall
    clock by 5 s in the middle of a read neither makes that read look fast nor moves the clock's time."""
    host = Host(ahead=600.0, legs=[(30, 30), (1, 1, 5), (30, 30)])
    clock = host.clock()
    clock.calibrate(host.session)
    assert clock.time() == pytest.approx(host.database(), abs=1e-6)
    host.t += 10.0
    assert clock.time() == pytest.approx(host.database(), abs=1e-6)


def test_a_measurement_too_slow_to_trust_keeps_the_last_one() -> None:
    host = Host(ahead=600.0, legs=[(1, 1), (200, 200)])
    clock = host.clock()
    clock.calibrate(host.session, samples=1)
    host.ahead = 700.0  # whatever the slow reading says is not adopted
    with pytest.raises(ClockUncertain):
        clock.calibrate(host.session, samples=1)
    assert clock.offset == pytest.approx(600.0, abs=1e-6)


def test_a_failed_calibration_keeps_the_last_offset() -> None:
    host = Host(ahead=-42.0, legs=[(1, 1)] * 3)
    clock = host.clock()
    clock.calibrate(host.session)

    @contextlib.contextmanager
    def unreachable() -> Iterator[Callable[[], float]]:
        raise ConnectionError("database away")
        yield host.read  # pragma: no cover

    with pytest.raises(ConnectionError):
        clock.calibrate(unreachable)
    assert clock.offset == pytest.approx(-42.0, abs=1e-6)


def test_a_skew_worth_fixing_is_logged_once_until_it_moves(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="infrastructure.clock")
    host = Host(ahead=0.0, legs=[(0, 0)] * 7)
    clock = host.clock()
    logged = []
    for ahead in [0.2, 300.0, 300.3, 299.8, 302.0, 0.1, 300.0]:
        host.ahead = ahead
        clock.calibrate(host.session, samples=1)
        logged.append(len(caplog.records))
    assert logged == [0, 1, 1, 1, 2, 2, 3]  # 300 s behind; moved by 2 s; back in sync; behind again
    assert "300.0 s behind the database's" in caplog.records[0].getMessage()


def test_it_measures_again_in_the_background_until_stopped() -> None:
    host = Host(ahead=5.0, legs=[(0, 0)] * 10)
    clock = host.clock()
    clock.calibrate(host.session, samples=1)
    host.ahead = 7.0
    host.measured.clear()
    clock.start(host.session, interval=0.01)
    try:
        assert host.measured.wait(timeout=10)  # a liveness bound, not a timing assertion
    finally:
        clock.stop()
    assert clock.offset == 7.0


def test_a_stepped_host_clock_changes_nothing_and_is_measured_again_at_once() -> None:
    """The time is carried forward on the monotonic clock, so a step of the wall clock leaves it right; a reading
    that finds the step wakes the thread, whose next regular measurement is an hour away, to measure the new
    offset."""
    host = Host(ahead=600.0, legs=[(0, 0)] * 6)
    clock = host.clock()
    clock.calibrate(host.session, samples=1)
    host.measured.clear()
    clock.start(host.session, interval=3600)
    try:
        host.step(+600.0)  # time sync fixes the host's clock: the database is now level with it
        assert clock.time() == pytest.approx(host.database(), abs=1e-6)
        assert host.measured.wait(timeout=10)  # a liveness bound, not a timing assertion
    finally:
        clock.stop()
    assert clock.offset == pytest.approx(0.0, abs=1e-6)
    assert clock.time() == pytest.approx(host.wall(), abs=1e-6)

"""A background loop's failures in a row: one traceback, then a line a minute, then the recovery."""

import logging

import pytest

from projections.failures import FailureStreak


class Ticking:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def records(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str, bool]]:
    return [(r.levelno, r.getMessage(), r.exc_info is not None) for r in caplog.records]


def test_an_outage_logs_one_traceback_then_a_line_a_minute_then_its_end(caplog: pytest.LogCaptureFixture) -> None:
    clock = Ticking()
    streak = FailureStreak("projection token_lookup", every=60, clock=clock)
    caplog.set_level(logging.INFO, logger="projections.failures")
    for _ in range(12):  # a failure every 5 s for a minute: one traceback only
        streak.failed(ConnectionError("the database is gone"))
        clock.now += 5
    streak.failed(ConnectionError("still gone"))
    assert streak.count == 13
    streak.succeeded()
    streak.succeeded()
    assert records(caplog) == [
        (logging.ERROR, "projection token_lookup failed; retrying", True),
        (logging.WARNING, "projection token_lookup still failing (13 attempts in a row, the last: ConnectionError); "
                          "retrying", False),
        (logging.WARNING, "projection token_lookup recovered after 13 failed attempts", False),
    ]
    assert "the database is gone" not in caplog.records[1].getMessage()


def test_a_new_streak_logs_its_traceback_again(caplog: pytest.LogCaptureFixture) -> None:
    clock = Ticking()
    streak = FailureStreak("reading the event store's head", every=60, clock=clock)
    caplog.set_level(logging.INFO, logger="projections.failures")
    streak.failed(ValueError("first"))
    streak.succeeded()
    streak.failed(ValueError("second"))
    tracebacks = [r for r in caplog.records if r.exc_info is not None]
    assert [str(r.exc_info[1]) for r in tracebacks if r.exc_info] == ["first", "second"]


def test_a_failure_of_another_kind_within_a_streak_logs_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    """An outage that turns into a bug (a bad event, say): the bug's traceback is logged, not only its type."""
    streak = FailureStreak("projection audit", every=60, clock=Ticking())
    caplog.set_level(logging.INFO, logger="projections.failures")
    streak.failed(ConnectionError("the database is gone"))
    streak.failed(ConnectionError("the database is gone"))
    streak.failed(KeyError("a bug"))
    streak.failed(KeyError("a bug"))
    logged = [(r.levelno, type(r.exc_info[1]).__name__ if r.exc_info else None) for r in caplog.records]
    assert logged == [(logging.ERROR, "ConnectionError"), (logging.ERROR, "KeyError")]


def test_an_outage_alternating_between_two_errors_logs_each_traceback_once(caplog: pytest.LogCaptureFixture) -> None:
    streak = FailureStreak("projection audit", every=60, clock=Ticking())
    caplog.set_level(logging.INFO, logger="projections.failures")
    for _ in range(10):
        streak.failed(ConnectionError("gone"))
        streak.failed(TimeoutError("no connection in time"))
    assert len([r for r in caplog.records if r.exc_info]) == 2

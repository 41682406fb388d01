"""The scheduler's loop through a Redis outage (``workers.runtime.run_scheduler``)."""

import logging
import threading
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from workers import runtime


def test_an_outage_is_logged_when_it_starts_and_ends_not_at_every_tick(monkeypatch: pytest.MonkeyPatch,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    stop = threading.Event()
    ticks = 0

    def due(*_: Any) -> list[str]:
        nonlocal ticks
        ticks += 1
        if ticks <= 50:
            raise RedisConnectionError("Connection refused")
        if ticks == 60:
            stop.set()
        return []

    monkeypatch.setattr(runtime, "schedule_due", due)
    caplog.set_level(logging.INFO)
    runtime.run_scheduler(None, None, "ns", stop, tick=0)  # returns once ``stop`` is set
    problems = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert problems == ["the scheduler failed; retrying", "the scheduler recovered after 50 failed attempts"]
    assert caplog.records[-1].levelno == logging.WARNING

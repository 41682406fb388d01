"""A save that loses a race on purpose: the competing change is recorded just before it, on the real or the
in-memory store alike."""

from collections.abc import Callable
from typing import Any

import pytest

from application.store import Keyledger


class Racer:
    """Makes a competing change just before each of the first ``times`` saves of ``app``, so that save loses.

    ``compete`` is given the store's own save (the racer's is patched over it) to record its change with."""

    def __init__(self, app: Keyledger, monkeypatch: pytest.MonkeyPatch, compete: Callable[[Callable[..., Any]], None],
                 times: int) -> None:
        self.saves, original = 0, app.save

        def racing(*aggregates: Any, **kwargs: Any) -> Any:
            self.saves += 1
            if self.saves <= times:
                compete(original)
            return original(*aggregates, **kwargs)

        monkeypatch.setattr(app, "save", racing)

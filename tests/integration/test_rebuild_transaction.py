"""A rebuild is one transaction, idle while the next page is read on another connection: on a large store a page
of a model with few events of its own takes longer to find than the pool lets a transaction sit idle, and the
rebuild must not be ended by that timeout."""

import time
from collections.abc import Iterator
from typing import Any

from infrastructure.bootstrap import Container


def test_a_rebuild_outlasts_the_pools_idle_in_transaction_timeout(quiet_container: Container) -> None:
    view = quiet_container.members
    with view.datastore.get_connection() as conn:
        row = conn.execute("SELECT setting::int AS ms FROM pg_settings "
                           "WHERE name = 'idle_in_transaction_session_timeout'").fetchone()
    idle_seconds = row["ms"] / 1000  # type: ignore[index]
    assert idle_seconds > 0  # the pool's sessions do time idle transactions out

    def slow_pages() -> Iterator[tuple[list[Any], int, int]]:
        yield [], 1, 2
        time.sleep(idle_seconds + 1)  # the next page takes longer to read than a transaction may idle
        yield [], 2, 2

    assert view.rebuild(slow_pages()) == 2
    assert view.position() == 2
    quiet_container.runner(view.name).rebuild()  # back to the store's content for the module's other tests

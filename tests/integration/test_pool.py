"""The process's connection pool hands out the connection returned last (``RecentFirstPool``)."""

import pytest

from infrastructure.bootstrap import Container
from infrastructure.postgres import RecentFirstPool

pytestmark = pytest.mark.integration


def test_statements_one_after_another_reuse_one_server_process(quiet_container: Container) -> None:
    """Sequential use keeps to the server process used last; concurrent use still gets distinct connections (a
    container with no background runner, so nothing else takes a connection between the steps)."""
    pool = quiet_container.app.recorder.datastore.pool
    assert isinstance(pool, RecentFirstPool)
    with pool.connection() as conn:  # opens the pool if it is not yet
        conn.execute("SELECT 1")
    pool.wait(timeout=10)  # every connection of min_size open, idle in the pool
    assert pool.get_stats()["pool_available"] > 1

    pids = []
    for _ in range(5):
        with pool.connection() as conn:
            pids.append(conn.info.backend_pid)
    assert len(set(pids)) == 1, f"sequential statements went to {len(set(pids))} server processes"

    with pool.connection() as first, pool.connection() as second:
        assert first.info.backend_pid != second.info.backend_pid
    with pool.connection() as again:
        assert again.info.backend_pid == first.info.backend_pid, "the connection returned last was not reused"

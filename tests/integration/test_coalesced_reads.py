"""Coalesced reads against the real PostgreSQL: questions asked together share a query, each caller gets its own
answer, a question asked while a query is in flight is answered by a later query (it sees what was committed
before it was asked), and a failure reaches only the callers of the failed query."""

import asyncio
import time
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from infrastructure.http.coalescing import ReadBatcher
from tests.conftest import fresh_database

# 100 / k: a key 0 fails the whole query in PostgreSQL (division by zero)
SLOW_QUERY = ("SELECT q.i, (SELECT v FROM kv WHERE k = q.k), 100 / q.k, pg_sleep(%(pause)s) IS NULL "
              "FROM unnest(%(k)s::int[]) WITH ORDINALITY AS q(k, i)")


@pytest.fixture
def kv_url(server_url: str) -> Iterator[str]:
    with fresh_database(server_url) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE kv (k int PRIMARY KEY, v int NOT NULL)")
            conn.execute("INSERT INTO kv SELECT g, g * 10 FROM generate_series(1, 100) AS g")
        yield url


def params(pause: float) -> Any:
    def render(keys: Sequence[tuple[Any, ...]]) -> dict[str, Any]:
        return {"k": [key[0] for key in keys], "pause": pause}
    return render


def run(url: str, scenario: Any, *, pause: float = 0.0, max_in_flight: int = 2) -> Any:
    async def main() -> Any:
        async with AsyncConnectionPool(url, min_size=1, max_size=4, kwargs={"autocommit": True}) as pool:
            return await scenario(ReadBatcher(pool, SLOW_QUERY, params(pause), max_in_flight=max_in_flight))
    return asyncio.run(main())


def test_questions_asked_together_share_one_query_and_each_gets_its_own_answer(kv_url: str) -> None:
    async def scenario(batcher: ReadBatcher) -> tuple[list[tuple[Any, ...]], int]:
        answers = await asyncio.gather(*(batcher.read(k) for k in range(1, 101)))
        return answers, batcher.queries

    answers, queries = run(kv_url, scenario)
    assert [answer[0] for answer in answers] == [k * 10 for k in range(1, 101)]
    assert queries == 1


def test_one_question_alone_is_answered(kv_url: str) -> None:
    async def scenario(batcher: ReadBatcher) -> tuple[Any, ...]:
        return await batcher.read(7)

    assert run(kv_url, scenario)[0] == 70


def wait_for_active_sleep(url: str) -> None:
    """Until a query with pg_sleep is running in PostgreSQL (its snapshot is taken)."""
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(500):
            # Sleeping: past planning, so the query's snapshot is taken (merely "active" may still be preparing).
            row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' "
                               "AND datname = current_database() AND pid <> pg_backend_pid()").fetchone()
            if row and row[0]:
                return
            time.sleep(0.01)
    raise AssertionError("the slow query never started")


def test_a_question_asked_during_a_query_sees_what_was_committed_before_it_was_asked(kv_url: str) -> None:
    async def scenario(batcher: ReadBatcher) -> tuple[Any, Any, int]:
        first = asyncio.ensure_future(batcher.read(1))
        await asyncio.to_thread(wait_for_active_sleep, kv_url)  # the first query runs, on its snapshot
        with psycopg.connect(kv_url, autocommit=True) as conn:
            conn.execute("UPDATE kv SET v = -1 WHERE k = 1")  # committed before the second question
        second = await batcher.read(1)
        return (await first)[0], second[0], batcher.queries

    before, after, queries = run(kv_url, scenario, pause=0.3, max_in_flight=1)
    assert before == 10
    assert after == -1
    assert queries == 2


def test_a_failed_query_fails_its_callers_and_the_next_one_answers(kv_url: str) -> None:
    async def scenario(batcher: ReadBatcher) -> tuple[list[Any], tuple[Any, ...]]:
        failed = await asyncio.gather(batcher.read(0), batcher.read(2), return_exceptions=True)
        return failed, await batcher.read(3)

    failed, later = run(kv_url, scenario)
    assert all(isinstance(outcome, psycopg.errors.DivisionByZero) for outcome in failed)
    assert later[0] == 30


def test_a_caller_that_gives_up_during_its_query_does_not_disturb_the_others(kv_url: str) -> None:
    async def scenario(batcher: ReadBatcher) -> tuple[bool, tuple[Any, ...]]:
        abandoned = asyncio.ensure_future(batcher.read(4))
        kept = asyncio.ensure_future(batcher.read(5))
        await asyncio.to_thread(wait_for_active_sleep, kv_url)  # both are in the running query
        abandoned.cancel()
        await asyncio.gather(abandoned, return_exceptions=True)
        return abandoned.cancelled(), await asyncio.wait_for(kept, 10)

    cancelled, kept = run(kv_url, scenario, pause=0.3)
    assert cancelled
    assert kept[0] == 50


def test_a_pool_with_no_free_connection_fails_the_waiting_callers_after_one_wait(kv_url: str) -> None:
    async def main() -> tuple[list[Any], int]:
        async with AsyncConnectionPool(kv_url, min_size=1, max_size=1, timeout=0.3,
                                       kwargs={"autocommit": True}) as pool:
            batcher = ReadBatcher(pool, SLOW_QUERY, params(0.0), max_in_flight=1)
            async with pool.connection():  # the only connection, taken
                first = asyncio.ensure_future(batcher.read(1))
                while not batcher._tasks or batcher._waiting:  # until the first question's query waits on the pool
                    await asyncio.sleep(0)
                behind = asyncio.ensure_future(batcher.read(2))  # queued behind the waiting query
                outcomes = await asyncio.wait_for(asyncio.gather(first, behind, return_exceptions=True), 10)
            return outcomes, pool.get_stats().get("requests_errors", 0)

    outcomes, timeouts = asyncio.run(main())
    assert all(isinstance(outcome, PoolTimeout) for outcome in outcomes)
    assert timeouts == 1  # the pool was asked once: the question behind failed with it, not after its own wait


def test_a_batcher_stopped_mid_query_leaves_no_caller_waiting_and_works_again(kv_url: str) -> None:
    async def scenario(batcher: ReadBatcher) -> tuple[bool, bool, tuple[Any, ...]]:
        running = asyncio.ensure_future(batcher.read(6))
        await asyncio.to_thread(wait_for_active_sleep, kv_url)
        queued = asyncio.ensure_future(batcher.read(7))  # behind the running query (one in flight at most)
        await asyncio.sleep(0)
        for task in list(batcher._tasks):
            task.cancel()  # what closing the event loop does
        await asyncio.wait_for(asyncio.gather(running, queued, return_exceptions=True), 10)
        return running.cancelled(), queued.cancelled(), await asyncio.wait_for(batcher.read(8), 10)

    running, queued, later = run(kv_url, scenario, pause=0.3, max_in_flight=1)
    assert running and queued
    assert later[0] == 80

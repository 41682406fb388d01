"""Coalesced reads: the hot single-row reads that arrive together go to PostgreSQL as one query.

Every ``/v1`` request, every JWKS document and every introspection or revocation by a client this process knows
asks PostgreSQL a small question on the event loop (see ``infrastructure.http.gate``). Asked one by one, each paid a
pool checkout, a prepared statement's round trip and psycopg's asynchronous wait machinery, and PostgreSQL paid a
protocol exchange per question. Here the questions queued while a read is being scheduled or is in flight are sent
together as one query over arrays, and each caller gets its own row: under load that nearly halved an API process's
CPU per ``/v1`` read and cut PostgreSQL's by three quarters (README, Benchmarks).

Freshness is unchanged: a caller's question is always answered by a query that PostgreSQL starts after the caller
asked (a question that arrives while a query is in flight waits for the next one), so anything committed before the
request arrived, a revocation above all (DESIGN.md invariant 1), is seen exactly as by a query of its own. One at a
time nothing waits: the first question starts a query on the next turn of the event loop.
"""

import asyncio
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

READ_ATTEMPTS = 4
NIL = UUID(int=0)  # stands for "none" in a uuid[] parameter: no token or stream has this id


class ReadBatcher:
    """Answers ``read(*key)`` calls with one query per batch of the calls waiting together.

    Args:
        pool: the asynchronous pool the queries run on.
        query: a prepared statement whose rows are ``(ordinal, *answer)``, one per key, ordinal counting from 1.
        params: turns the batch's keys into the query's parameters (arrays, in the keys' order).
        max_in_flight: queries of this batcher at once; more questions wait for one to finish and then go together.
        max_batch: keys per query at most.
    """

    def __init__(self, pool: AsyncConnectionPool, query: str, params: Callable[[Sequence[tuple[Any, ...]]], Any],
                 *, max_in_flight: int = 2, max_batch: int = 512) -> None:
        self._pool = pool
        self._query = query
        self._params = params
        self._max_in_flight = max_in_flight
        self._max_batch = max_batch
        self._waiting: list[tuple[tuple[Any, ...], asyncio.Future[tuple[Any, ...]]]] = []
        self._in_flight = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.queries = 0  # counters for tests and diagnostics
        self.keys = 0

    async def read(self, *key: Any) -> tuple[Any, ...]:
        """The answer row for ``key`` (without its ordinal), from a query started after this call."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[Any, ...]] = loop.create_future()
        self._waiting.append((key, future))
        if not self._scheduled and self._in_flight < self._max_in_flight:
            self._scheduled = True
            loop.call_soon(self._start)  # the questions parsed in this turn of the loop join the same query
        return await future

    def _start(self) -> None:
        self._scheduled = False
        if self._waiting and self._in_flight < self._max_in_flight:
            self._in_flight += 1
            task = asyncio.ensure_future(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch = [item for item in self._waiting[:self._max_batch] if not item[1].done()]
                del self._waiting[:self._max_batch]
                if batch:
                    await self._answer(batch)
        finally:
            self._in_flight -= 1

    async def _answer(self, batch: list[tuple[tuple[Any, ...], asyncio.Future[tuple[Any, ...]]]]) -> None:
        try:
            rows = await fetch_rows(self._pool, self._query, self._params([key for key, _ in batch]))
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        self.queries += 1
        self.keys += len(batch)
        answers = {row[0]: row[1:] for row in rows}
        for ordinal, (_, future) in enumerate(batch, start=1):
            answer = answers.get(ordinal)
            if future.done():
                continue
            if answer is None:
                future.set_exception(RuntimeError("the coalesced read returned no row for a key"))
            else:
                future.set_result(answer)


async def fetch_rows(pool: AsyncConnectionPool, query: str, params: Any) -> list[tuple[Any, ...]]:
    """The rows of a prepared read-only query.

    A connection that broke since it was last used (a server restart breaks them all) is discarded and the read tried
    again on another, a few times: the query only reads. A pool that had no connection to give within its timeout is
    not asked again: the callers get their 503 now rather than after several timeouts.
    """
    for attempt in range(1, READ_ATTEMPTS + 1):
        try:
            async with pool.connection() as conn:
                cursor = conn.cursor(row_factory=tuple_row)
                await cursor.execute(query, params, prepare=True)
                return await cursor.fetchall()
        except PoolTimeout:
            raise
        except psycopg.OperationalError:
            if attempt == READ_ATTEMPTS:
                raise
    raise AssertionError("unreachable")

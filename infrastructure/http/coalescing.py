"""Coalesced reads: the hot single-row reads that arrive together go to PostgreSQL as one query.

Every ``/v1`` request, every JWKS document and every introspection or revocation by a client this process knows
asks PostgreSQL a small question on the event loop (see ``infrastructure.http.gate``). Asked one by one, each paid a
pool checkout, a prepared statement's round trip and psycopg's asynchronous wait machinery, and PostgreSQL paid a
protocol exchange per question. Here the questions queued while a read is being scheduled or is in flight are sent
together as one query over arrays, and each caller gets its own row: under load that nearly halved an API process's
CPU per ``/v1`` read and cut PostgreSQL's by three quarters (README, Benchmarks).

Freshness is unchanged: a caller's question is only ever answered by a query that PostgreSQL starts after the caller
asked (a question that arrives while its batcher's queries are all in flight is sent with the next query, never
answered from one already running), so anything committed before the request arrived, a revocation above all
(DESIGN.md invariant 1), is seen exactly as by a query of its own. One at a time nothing waits for company: the
first question's query is sent within the next turns of the event loop.

Failures stay bounded: a query that fails fails only its own callers, except when the pool has no connection to give
(or is closed), when every question waiting behind it is failed too (each would only wait out the same timeout).
"""

import asyncio
import contextvars
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout, TooManyRequests

READ_ATTEMPTS = 4
NIL = UUID(int=0)  # stands for "none" in a uuid[] parameter: no token or stream has this id
POOL_FAILURES = (PoolTimeout, PoolClosed, TooManyRequests)  # the pool's own refusals: no connection was tried

Waiting = tuple[tuple[Any, ...], "asyncio.Future[tuple[Any, ...]]"]


class ReadBatcher:
    """Answers ``read(*key)`` calls with one query per batch of the calls waiting together.

    Args:
        pool: the asynchronous pool the queries run on.
        query: SQL text (run as a prepared statement) whose rows are ``(ordinal, *answer)``, one per key, the
            ordinal counting from 1 in the keys' order.
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
        self._waiting: list[Waiting] = []
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
        self._schedule(loop)
        return await future

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._scheduled and self._in_flight < self._max_in_flight:
            self._scheduled = True
            # Next turn: the questions parsed in this turn of the loop join the same query. No request's context
            # (log fields, say) is carried into work done for many requests.
            loop.call_soon(self._start, context=contextvars.Context())

    def _start(self) -> None:
        self._scheduled = False
        if self._waiting and self._in_flight < self._max_in_flight:
            self._in_flight += 1
            task = asyncio.get_running_loop().create_task(self._drain(), context=contextvars.Context())
            self._tasks.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: "asyncio.Task[None]") -> None:
        """A drain ended (done, failed or cancelled): its slot is free, and no question is left without a drain."""
        self._tasks.discard(task)
        self._in_flight -= 1
        if task.cancelled():  # the loop is shutting down: nothing will run the waiting questions
            self._fail_waiting(None)
        elif (exc := task.exception()) is not None:  # a bug, not a database failure (those reach their callers)
            self._fail_waiting(exc)
        elif self._waiting:
            self._schedule(asyncio.get_running_loop())

    async def _drain(self) -> None:
        while self._waiting:
            live = [item for item in self._waiting if not item[1].done()]
            batch, self._waiting = live[:self._max_batch], live[self._max_batch:]
            if batch:
                await self._answer(batch)

    async def _answer(self, batch: list[Waiting]) -> None:
        try:
            rows = await fetch_rows(self._pool, self._query, self._params([key for key, _ in batch]))
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:
            _fail(batch, exc)
            if isinstance(exc, POOL_FAILURES):
                self._fail_waiting(exc)
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

    def _fail_waiting(self, exc: BaseException | None) -> None:
        """Fails (``None``: cancels) every question not yet sent."""
        waiting, self._waiting = self._waiting, []
        if exc is None:
            for _, future in waiting:
                future.cancel()
        else:
            _fail(waiting, exc)


def _fail(items: list[Waiting], exc: BaseException) -> None:
    for _, future in items:
        if not future.done():
            future.set_exception(exc)


async def fetch_rows(pool: AsyncConnectionPool, query: str, params: Any) -> list[tuple[Any, ...]]:
    """The rows of a prepared read-only query.

    A connection that broke since it was last used (a server restart breaks them all) is discarded and the read tried
    again on another, a few times: the query only reads. A pool that had no connection to give within its timeout (or
    is closed, or has too many waiting) is not asked again: the callers get their 503 now, not after several timeouts.
    """
    for attempt in range(1, READ_ATTEMPTS + 1):
        try:
            async with pool.connection() as conn:
                cursor = conn.cursor(row_factory=tuple_row)
                await cursor.execute(query, params, prepare=True)
                return await cursor.fetchall()
        except POOL_FAILURES:
            raise
        except psycopg.OperationalError:
            if attempt == READ_ATTEMPTS:
                raise
    raise AssertionError("unreachable")

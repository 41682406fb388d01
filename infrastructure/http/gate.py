"""The request gate: one asynchronous round trip answers what every ``/v1`` request must know before it runs.

A bearer request needs three facts from PostgreSQL: whether its token was revoked (DESIGN.md invariant 1: the
``revoked_tokens`` list the event store writes in the transaction of each revocation, or the token lookup model);
on a project's path, the version of that project's stream (the caller's role is decided on the project as it is
now, not on a stale copy); and the key ring's version (a signing key revoked by another process is refused by this
one at once). Asking all three in one query, on the event loop with an asynchronous pool, costs one round trip and
no thread hand-off, where the synchronous path cost two round trips and two hand-offs; the questions of requests
that arrive together share one query (``infrastructure.http.coalescing``). The project itself comes from
:class:`ProjectSnapshots` when the version matches, so a read of an unchanged project decodes nothing.
"""

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from psycopg.conninfo import conninfo_to_dict
from psycopg.sql import SQL, Composable, Identifier
from psycopg_pool import AsyncConnectionPool

from domain.ids import keyring_id
from domain.project import Project
from infrastructure.http.coalescing import NIL, ReadBatcher
from infrastructure.postgres import session_options
from projections.token_lookup import REVOKED_TOKENS_TABLE


@dataclass(frozen=True, slots=True)
class GateAnswer:
    """What one question learnt: the token's facts, a stream's version and the key ring's version."""

    status: str | None  # the token lookup's status; None if the hot table has no row (not yet, or moved past expiry)
    written_through: bool  # the token's revocation is listed in ``revoked_tokens``
    stream_version: int | None  # None: no such stream (or none asked)
    ring_version: int

    @property
    def revoked(self) -> bool:
        """Whether the token may no longer be used (revoked, or a refresh token used up)."""
        return self.written_through or self.status in ("revoked", "used")


class RequestGate:
    """Answers "revoked?", "stream version?" and "ring version?" (see the module docstring), coalescing the
    questions that arrive together into one query (``infrastructure.http.coalescing``)."""

    def __init__(self, database_url: str, *, lookup_table: Composable, events_table: Composable,
                 revoked_table: Composable, max_size: int) -> None:
        # A request waits at most a few seconds for a connection: then 503 (see ``errors.unavailable_handler``),
        # never a hung request. Connections are not checked when taken (that is a round trip per request): a broken
        # one fails its query, is discarded by the pool, and ``fetch_rows`` tries another.
        options = session_options(conninfo_to_dict(database_url).get("options"))  # the URL's kept
        self.pool = AsyncConnectionPool(database_url, min_size=1, max_size=max_size, open=False, timeout=5.0,
                                        kwargs={"autocommit": True, "options": options}, configure=_keyed_reads_only)
        query = SQL(
            "SELECT q.i, (SELECT status FROM {lookup} WHERE token_id = q.t), "
            "(SELECT true FROM {revoked} WHERE token_id = q.t) IS NOT NULL, "
            "(SELECT max(originator_version) FROM {events} WHERE originator_id = q.s), "
            "(SELECT max(originator_version) FROM {events} WHERE originator_id = %(k)b) "
            "FROM unnest(%(t)b::uuid[], %(s)b::uuid[]) WITH ORDINALITY AS q(t, s, i)"
        ).format(lookup=lookup_table, events=events_table, revoked=revoked_table).as_string(None)
        self.reads = ReadBatcher(self.pool, query, _read_params)

    async def read(self, token_id: UUID | None, stream_id: UUID | None) -> GateAnswer:
        """The token's lookup status and whether its revocation is listed, the stream's version and the key ring's
        version, from a query started after this call (None: no such token or stream)."""
        status, written_through, version, ring = await self.reads.read(token_id or NIL, stream_id or NIL)
        return GateAnswer(status=status, written_through=bool(written_through), stream_version=version,
                          ring_version=int(ring or 0))

    async def ring_version(self) -> int:
        """The key ring's version (the JWKS endpoint's one question), on the event loop like ``check``."""
        return (await self.read(None, None)).ring_version

    async def open(self) -> None:
        """Opens the pool (in the event loop that will use it)."""
        await self.pool.open(wait=True)

    async def close(self) -> None:
        """Closes the pool."""
        await self.pool.close()

    async def check(self, token_id: UUID, project_id: UUID | None) -> GateAnswer:
        """A bearer request's question: whether the token is revoked (or used up), the project's stream version
        (None: no project) and the key ring's version (a process whose key snapshot is older reloads it before
        trusting a signature)."""
        return await self.read(token_id, project_id)


async def _keyed_reads_only(conn: Any) -> None:
    """Disables sequential scans on a gate connection: its one query reads every table by key. Prepared, the query
    keeps its plan for the connection's life, and a plan made while a table was small (the revocation list of a
    fresh install, empty) scans it whole, on every request, however large it grows; only new statistics of the
    table (autovacuum's ANALYZE or VACUUM, when it runs) would make PostgreSQL plan it again. The query's
    subqueries are scalar ones for the same reason: an ``EXISTS`` may be planned as a hash of the whole table."""
    await conn.execute("SET enable_seqscan = off")


def _read_params(keys: Sequence[tuple[Any, ...]]) -> dict[str, Any]:
    return {"t": [key[0] for key in keys], "s": [key[1] for key in keys], "k": keyring_id()}


def events_table(app: Any) -> Composable:
    """The event store's table, schema-qualified."""
    recorder = app.recorder
    return SQL("{}.{}").format(Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name))


def revoked_table(app: Any) -> Composable:
    """The list of revoked tokens the recorder writes through (see ``infrastructure.recorder``), schema-qualified."""
    return SQL("{}.{}").format(Identifier(app.recorder.datastore.schema), Identifier(REVOKED_TOKENS_TABLE))


class ProjectSnapshots:
    """Private, never-mutated copies of projects by version, for read-only authorization on hot paths.

    A copy is stored only from a deep copy the application made, so no other thread ever changes it; a request that
    knows the stream's current version (from the gate) uses the copy only when the versions match.
    """

    def __init__(self, capacity: int = 1024) -> None:
        self._capacity = capacity
        self._items: OrderedDict[UUID, Project] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, project_id: UUID, version: int) -> Project | None:
        """The copy of ``project_id`` at exactly ``version``, or None."""
        with self._lock:
            project = self._items.get(project_id)
            if project is None or project.version != version:
                return None
            self._items.move_to_end(project_id)
            return project

    def put(self, project: Project) -> None:
        """Keeps ``project`` (a private copy) unless a newer copy is kept already."""
        with self._lock:
            current = self._items.get(project.id)
            if current is not None and current.version > project.version:
                return
            self._items[project.id] = project
            self._items.move_to_end(project.id)
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)

"""The audit ledger read model: one row per stored event, every project's entries hash-chained.

Rows are written a batch per binary COPY (psycopg formats them in C), in one transaction with the model's tracking
position (exactly-once, like every read model). The head of each chain (its last position and hash) is kept in
``audit_chain`` so a batch needs one read of the heads it extends, not a scan. ``audit`` is tenant data: the
request path reads it as the tenant role, confined by row-level security to the request's project; platform-level
entries (no project) are seen only by the operator's CLI, which reads as the owner.

Indexes: the position (primary key) for the operator's export, and per project: position, token, client, user,
type (each ending with the position, so a filtered page is one index range scan in position order), and
``reach`` for ``since``. An entry's ``reach`` is the latest ``occurred_at`` of its chain up to it: it never
decreases along the chain, so the first entry whose reach is at or after ``since`` is found in the index, and no
entry before it can have occurred at or after ``since``. A page from ``since`` then starts there in position order
instead of scanning the project from its beginning (event times and positions agree only nearly: an event is
timestamped when decided and positioned when committed).

Platform-level entries are in the first two only. Nothing reads them filtered: the operator's CLI exports them by
position, and the API reads projects. A member's dashboard event is a platform entry and an entry of each of their
projects, so indexing the platform's copy as well cost every login, rotation and logout five more index entries per
event, those of the token index in pages all over it.
"""

from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any
from uuid import UUID

from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composable, Identifier
from psycopg.types.json import Jsonb

from projections.audit_entry import AuditEntry, Head, Memberships, chained, entry_of, json_bytes
from projections.audit_query import COLUMNS, AuditQuery
from projections.base import TENANT_ROLE, TENANT_SETTING, ReadModel

_INDEXES = {
    "audit_project_idx": "(project_id, position)",
    "audit_project_token_idx": "(project_id, token_id, position) WHERE project_id IS NOT NULL AND token_id IS NOT NULL",
    "audit_project_client_idx": "(project_id, client_id, position) WHERE project_id IS NOT NULL "
                                "AND client_id IS NOT NULL",
    "audit_project_user_idx": "(project_id, user_id, position) WHERE project_id IS NOT NULL AND user_id IS NOT NULL",
    "audit_project_type_idx": "(project_id, type, position) WHERE project_id IS NOT NULL",
    "audit_project_reach_idx": "(project_id, reach, position) WHERE project_id IS NOT NULL",
}
_SUPERSEDED = ("audit_token_idx", "audit_client_idx", "audit_user_idx", "audit_type_idx", "audit_reach_idx")


class AuditView(ReadModel):
    """``audit``: every event of the store as ledger entries; ``audit_chain``: each chain's head; ``audit_member``:
    who is a member of which project (for ``fan_out``; not tenant data, the tenant role cannot read it)."""

    name = "audit"
    tables = ("audit", "audit_chain", "audit_member")
    tenant_tables = ("audit",)
    topics: frozenset[str] = frozenset()  # every event

    def create_statements(self) -> list[Composable]:
        """The ledger, its chain heads and the indexes of filtered pages."""
        table = self.table("audit")
        statements: list[Composable] = [
            SQL("CREATE TABLE IF NOT EXISTS {} (position bigint NOT NULL, chain uuid NOT NULL, project_id uuid, "
                "type text NOT NULL, "
                "occurred_at timestamptz NOT NULL, actor_kind text NOT NULL, actor_id text, token_id uuid, "
                "client_id text, user_id uuid, stream_id uuid NOT NULL, stream_version integer NOT NULL, "
                "data jsonb NOT NULL, hash text NOT NULL, reach timestamptz NOT NULL, PRIMARY KEY (position, chain))")
            .format(table),
            SQL("CREATE TABLE IF NOT EXISTS {} (chain uuid PRIMARY KEY, position bigint NOT NULL, hash text NOT NULL, "
                "reach timestamptz NOT NULL)").format(self.table("audit_chain")),
            SQL("CREATE TABLE IF NOT EXISTS {} (user_id uuid NOT NULL, project_id uuid NOT NULL, "
                "PRIMARY KEY (user_id, project_id))").format(self.table("audit_member")),
        ]
        statements += [SQL("CREATE INDEX IF NOT EXISTS {} ON {} " + spec).format(Identifier(name), table)
                       for name, spec in _INDEXES.items()]
        statements += [SQL("DROP INDEX IF EXISTS {}").format(self.table(name)) for name in _SUPERSEDED]
        return statements

    def __init__(self, datastore: Any, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        # Binary COPY with the columns' types set: psycopg formats each row in C. Against one array per column
        # (INSERT ... SELECT FROM unnest) it cost about a quarter less Python and a quarter less wall time per entry
        # (benchmarks/HISTORY.md, session 30; a COPY without types, formatted in Python, cost more).
        self._copy_sql = SQL("COPY {} (position, chain, project_id, type, occurred_at, actor_kind, actor_id, token_id, "
                             "client_id, user_id, stream_id, stream_version, data, hash, reach) FROM STDIN "
                             "(FORMAT BINARY)").format(self.table("audit")).as_string(None)

    def decode(self, mapper: Any, notifications: Sequence[Any]) -> list[Any]:
        """Entries need their event's global position: ``(position, event)`` pairs."""
        return [(n.id, mapper.to_domain_event(n)) for n in notifications]

    def apply(self, curs: Cursor[DictRow], event: Any) -> None:
        """Applies one ``(position, event)`` pair."""
        self.apply_events(curs, [event])

    def apply_events(self, curs: Cursor[DictRow], events: Sequence[Any]) -> None:
        """Chains and copies a batch of entries, then moves the heads of the chains it extended."""
        if not events:
            return
        base = [entry_of(position, event) for position, event in events]
        memberships = Memberships(of=self._memberships(curs, {e.user_id for e in base if e.project_id is None}))
        entries = [entry for b, (_, event) in zip(base, events, strict=True) for entry in memberships.expand(b, event)]
        heads = self._heads(curs, {e.chain for e in entries})
        rows = []
        for entry in entries:
            head = heads[entry.chain] = chained(entry, heads.get(entry.chain))
            rows.append(_row(entry, head))
        with curs.copy(self._copy_sql) as copy:
            copy.set_types(_COLUMN_TYPES)
            for row in rows:
                copy.write_row(row)
        curs.executemany(SQL("INSERT INTO {} AS c (chain, position, hash, reach) VALUES (%s, %s, %s, %s) "
                             "ON CONFLICT (chain) DO UPDATE SET position = EXCLUDED.position, hash = EXCLUDED.hash, "
                             "reach = EXCLUDED.reach").format(self.table("audit_chain")),
                         [(chain, head.position, head.hash, head.reach) for chain, head in heads.items()
                          if head.position is not None])
        self._save_memberships(curs, memberships)

    def _memberships(self, curs: Cursor[DictRow], users: set[UUID | None]) -> dict[UUID, set[UUID]]:
        wanted = [u for u in users if u is not None]
        if not wanted:
            return {}
        curs.execute(SQL("SELECT user_id, project_id FROM {} WHERE user_id = ANY(%b)").format(
            self.table("audit_member")), (wanted,))
        found: dict[UUID, set[UUID]] = {}
        for row in curs.fetchall():
            found.setdefault(row["user_id"], set()).add(row["project_id"])
        return found

    def _save_memberships(self, curs: Cursor[DictRow], memberships: Memberships) -> None:
        table = self.table("audit_member")
        joined = [(user, project) for (project, user), member in memberships.changed.items() if member]
        left = [(user, project) for (project, user), member in memberships.changed.items() if not member]
        if joined:
            curs.executemany(SQL("INSERT INTO {} VALUES (%s, %s) ON CONFLICT DO NOTHING").format(table), joined)
        if left:
            curs.executemany(SQL("DELETE FROM {} WHERE user_id = %s AND project_id = %s").format(table), left)

    def _heads(self, curs: Cursor[DictRow], chains: set[UUID]) -> dict[UUID, Head]:
        curs.execute(SQL("SELECT chain, hash, reach FROM {} WHERE chain = ANY(%b)").format(
            self.table("audit_chain")), (list(chains),))
        return {row["chain"]: Head(hash=row["hash"], reach=row["reach"]) for row in curs.fetchall()}

    def page(self, query: AuditQuery) -> list[DictRow]:
        """A page of one project's entries in position order, read as the tenant role."""
        assert query.project_id is not None
        with self.datastore.transaction(commit=False) as curs:
            self._confine(curs, query.project_id)
            bounded = self.bounded(curs, query)
            if bounded is None:
                return []
            where, params = bounded.where()
            select = SQL("SELECT {} FROM {} WHERE ").format(COLUMNS, self.table("audit"))
            params["limit"] = query.limit
            curs.execute(select + where + SQL(" ORDER BY position LIMIT %(limit)s"), params)
            return curs.fetchall()

    def bounded(self, curs: Cursor[DictRow], query: AuditQuery) -> AuditQuery | None:
        """``query`` with the position its ``since`` starts at (one probe of the reach index), or None when no entry
        is that recent. A plain bound, so the page is an index range scan (a subquery in the page's own WHERE
        clause is not used as an index condition under row-level security)."""
        if query.since is None or query.project_id is None:
            return query
        curs.execute(SQL("SELECT position FROM {} WHERE project_id = %s AND reach >= %s ORDER BY reach, position "
                         "LIMIT 1").format(self.table("audit")), (query.project_id, query.since))
        row = curs.fetchone()
        return None if row is None else replace(query, start=row["position"])

    def lines(self, query: AuditQuery, *, as_tenant: bool, batch: int = 2000) -> Iterator[list[str]]:
        """The whole filtered range as NDJSON lines (built by PostgreSQL), in batches, through a server-side cursor:
        memory stays flat however long the range. ``as_tenant`` confines the read to ``query.project_id``."""
        with self.datastore.transaction(commit=False) as curs:
            self._confine(curs, query.project_id if as_tenant else None)
            bounded = self.bounded(curs, query)
            if bounded is None:
                return
            where, params = bounded.where()
            select = SQL("SELECT {} FROM {} WHERE ").format(_JSON_LINE, self.table("audit")) + where + SQL(
                " ORDER BY position, chain")
            with curs.connection.cursor(name="audit_export", row_factory=_first) as named:
                named.itersize = batch
                named.execute(select, params)
                while rows := named.fetchmany(batch):
                    yield rows

    def csv(self, query: AuditQuery, *, as_tenant: bool) -> Iterator[bytes]:
        """The whole filtered range as CSV with a header, streamed by COPY in blocks (flat memory)."""
        with self.datastore.transaction(commit=False) as curs:
            self._confine(curs, query.project_id if as_tenant else None)
            bounded = self.bounded(curs, query) or replace(query, start=2**63 - 1)  # none that recent: the header
            where, params = bounded.where()
            select = SQL("SELECT {} FROM {} WHERE ").format(_CSV_COLUMNS, self.table("audit")) + where + SQL(
                " ORDER BY position, chain")
            with curs.copy(SQL("COPY ({}) TO STDOUT WITH (FORMAT csv, HEADER)").format(select), params) as pipe:
                # COPY hands over about a row per block: gather them, so each chunk sent is worth a thread hop.
                buffer = bytearray()
                for block in pipe:
                    buffer += block
                    if len(buffer) >= _CHUNK:
                        yield bytes(buffer)
                        buffer.clear()
                if buffer:
                    yield bytes(buffer)

    @staticmethod
    def _confine(curs: Cursor[DictRow], project_id: UUID | None) -> None:
        curs.execute("SET LOCAL TIME ZONE 'UTC'")  # timestamps in exports read the same wherever they are made
        # An export's transaction idles while the client reads a batch: the pool's 10 s idle limit is for commands.
        curs.execute("SET LOCAL idle_in_transaction_session_timeout = '10min'")
        if project_id is not None:
            curs.execute(SQL("SET LOCAL ROLE {}").format(Identifier(TENANT_ROLE)))
            curs.execute("SELECT set_config(%s, %s, true)", (TENANT_SETTING, str(project_id)))


_CHUNK = 256 * 1024


def _first(cursor: Any) -> Any:
    """A row factory returning each row's only column (the export's JSON line)."""
    return lambda values: values[0]


_COLUMN_TYPES = ("int8", "uuid", "uuid", "text", "timestamptz", "text", "text", "uuid", "text", "uuid", "uuid", "int4",
                 "jsonb", "text", "timestamptz")


def _row(entry: AuditEntry, head: Head) -> tuple[Any, ...]:
    # A stream's version is an int4 column: binary COPY sends the number as it is (no server-side range check, as the
    # arrays' cast made), and no stream comes near 2**31 events (a token's has a handful).
    return (entry.position, entry.chain, entry.project_id, entry.type, entry.occurred_at, entry.actor_kind,
            entry.actor_id, entry.token_id, entry.client_id, entry.user_id, entry.stream_id, entry.stream_version,
            Jsonb(entry.data, dumps=json_bytes), head.hash, head.reach)


# Times as the API shows them (``API_TIME``): UTC, always with microseconds, whatever the session's settings.
_TIME = "to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')"

# One entry as the API shows it, built by PostgreSQL so an export costs Python almost nothing per entry.
_JSON_LINE = SQL(
    "json_build_object('position', position, 'type', type, 'occurred_at', " + _TIME + ", 'project_id', project_id, "
    "'actor', json_build_object('kind', actor_kind, 'id', actor_id), 'token_id', token_id, 'client_id', client_id, "
    "'user_id', user_id, 'stream_id', stream_id, 'stream_version', stream_version, 'data', data, 'hash', hash)::text")
_CSV_COLUMNS = SQL("position, type, " + _TIME + " AS occurred_at, project_id, actor_kind, actor_id, token_id, "
                   "client_id, user_id, stream_id, stream_version, data, hash")

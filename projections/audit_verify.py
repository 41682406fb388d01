"""Completeness and tamper evidence of the audit ledger: the table against the event store, and against itself.

The store is the record. ``verify`` walks it in position order, recomputes each event's entry and its hash in its
project's chain (``projections.audit_entry``), and walks the table alongside (a server-side cursor, so memory is
flat: the only state kept is each chain's last hash). Each position is then one of:

* ``missing``: the store has the event, the table has no entry at its position;
* ``extra``: the table has an entry at a position where the store has no event (of that project, with a filter);
* ``altered``: both have it, but the entry's content or hash differs from the one the store implies, or its hash
  does not follow from its own content and the previous hash of its chain in the table.

Only the positions the model has applied (its tracking position) are compared: a newer event is not missing yet.
"""

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.rows import dict_row
from psycopg.sql import SQL

from projections.audit import AuditView
from projections.audit_entry import GENESIS, AuditEntry, Memberships, hash_of
from projections.audit_query import COLUMNS
from projections.base import APPLICATION_NAME

MAX_REPORTED = 1000


@dataclass(frozen=True, slots=True)
class Problem:
    """One discrepancy: ``kind`` is ``missing``, ``extra`` or ``altered``."""

    kind: str
    position: int
    detail: str


@dataclass(slots=True)
class Report:
    """What a verification found. ``problems`` keeps the first MAX_REPORTED; ``counts`` counts them all."""

    checked: int = 0
    up_to: int = 0
    problems: list[Problem] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    def add(self, kind: str, position: int, detail: str) -> None:
        """Records a problem."""
        self.counts[kind] += 1
        if len(self.problems) < MAX_REPORTED:
            self.problems.append(Problem(kind, position, detail))

    @property
    def ok(self) -> bool:
        """Whether the ledger matched the store entirely."""
        return not self.counts


@dataclass(frozen=True, slots=True)
class Chained:
    """An entry with its canonical content and its hash."""

    entry: AuditEntry
    hash: str
    canonical: bytes
    reach: datetime


def expected(recorder: Any, mapper: Any, stop: int, project_id: UUID | None, page: int = 2000, *,
             platform: bool = False) -> Iterator[Chained]:
    """The entries the store implies up to ``stop`` (of ``project_id`` only, if given; of the platform's own chain
    only, with ``platform``), chained."""
    heads: dict[UUID, tuple[str, datetime]] = {}
    memberships = Memberships()
    start = 0
    while start < stop:
        batch = recorder.select_notifications(start=start, limit=page, stop=stop, inclusive_of_start=False)
        if not batch:
            return
        for notification in batch:
            for entry in memberships.entries(notification.id, mapper.to_domain_event(notification)):
                if (project_id is not None and entry.project_id != project_id) or \
                        (platform and entry.project_id is not None):
                    continue
                canonical = entry.canonical_bytes()
                previous, reach = heads.get(entry.chain, (GENESIS, entry.occurred_at))
                head = heads[entry.chain] = (hash_of(previous, canonical), max(reach, entry.occurred_at))
                yield Chained(entry, head[0], canonical, head[1])
        start = batch[-1].id


def recorded(view: AuditView, project_id: UUID | None, batch: int = 2000, *, platform: bool = False) -> Iterator[Any]:
    """The model's position, then the table's entries (of ``project_id`` only, if given; of the platform's own chain
    only, with ``platform``) in position order, all read in one snapshot: entries past the position cannot exist,
    and are reported as extra."""
    where = SQL(" WHERE project_id = %(project_id)s") if project_id else SQL("")
    if platform:
        where = SQL(" WHERE project_id IS NULL")
    query = SQL("SELECT {} FROM {}").format(COLUMNS, view.table("audit")) + where + SQL(" ORDER BY position, chain")
    with view.datastore.transaction(commit=False) as curs, \
            curs.connection.cursor(name="audit_verify", row_factory=dict_row) as named:
        curs.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        curs.execute("SET LOCAL idle_in_transaction_session_timeout = '10min'")  # idles while the store is read
        # Before the snapshot: a rebuild swaps in a new table (``projections.rebuild``), whose rows a snapshot taken
        # before its commit cannot see; read after such a swap, the whole ledger would look missing. Held, the table
        # stays the one the snapshot knows: the swap waits for this read.
        curs.execute(SQL("LOCK TABLE {} IN ACCESS SHARE MODE").format(view.table("audit")))
        yield view._max_tracking_id(APPLICATION_NAME, curs) or 0
        named.itersize = batch
        named.execute(query, {"project_id": project_id})
        yield from named


def row_entry(row: dict[str, Any]) -> AuditEntry:
    """A table row as an entry (its hash aside)."""
    return AuditEntry(position=row["position"], project_id=row["project_id"], type=row["type"],
                      occurred_at=row["occurred_at"], actor_kind=row["actor_kind"], actor_id=row["actor_id"],
                      token_id=row["token_id"], client_id=row["client_id"], user_id=row["user_id"],
                      stream_id=row["stream_id"], stream_version=row["stream_version"], data=row["data"])


@dataclass(slots=True)
class _Walk:
    """The state of one verification: the report and the table's own chain heads."""

    report: Report
    table_heads: dict[UUID, str] = field(default_factory=dict)

    def compare(self, want: Chained, row: dict[str, Any]) -> None:
        got = row_entry(row)
        previous = self.table_heads.get(got.chain, GENESIS)
        self.table_heads[got.chain] = row["hash"]
        canonical = got.canonical_bytes()
        if canonical != want.canonical:
            self.report.add("altered", got.position, f"{want.entry.type}: content differs from the event store")
        elif row["hash"] != want.hash:
            self.report.add("altered", got.position, f"{want.entry.type}: hash differs from the chain of the store")
        elif hash_of(previous, canonical) != row["hash"]:
            self.report.add("altered", got.position, f"{want.entry.type}: hash does not follow the previous entry")
        elif row["reach"] != want.reach:
            self.report.add("altered", got.position, f"{want.entry.type}: reach differs from the chain's times")

    def missing(self, want: Chained) -> None:
        entry = want.entry
        where = f"project {entry.project_id}" if entry.project_id else "the platform"
        self.report.add("missing", entry.position, f"{entry.type} of stream {entry.stream_id} "
                                                   f"v{entry.stream_version} in {where}")

    def unexpected(self, row: dict[str, Any]) -> None:
        self.table_heads[row["chain"]] = row["hash"]
        self.report.add("extra", row["position"], f"{row['type']}: no such event in the store for this chain")


def _key(want: Chained) -> tuple[int, UUID]:
    return want.entry.position, want.entry.chain


def verify(recorder: Any, mapper: Any, view: AuditView, *, project_id: UUID | None = None, platform: bool = False,
           progress: Callable[[int, int], None] | None = None) -> Report:
    """Compares the ledger with the event store up to the model's position; see the module docstring. Every chain
    by default, one project's with ``project_id``, the platform's own with ``platform``."""
    rows = recorded(view, project_id, platform=platform)
    stop = next(rows)
    walk = _Walk(Report(up_to=stop))
    wants = expected(recorder, mapper, stop, project_id, platform=platform)
    want, row = next(wants, None), next(rows, None)
    while want is not None or row is not None:
        if row is None or (want is not None and _key(want) < (row["position"], row["chain"])):
            assert want is not None
            walk.missing(want)
            position, want = want.entry.position, next(wants, None)
        elif want is None or (row["position"], row["chain"]) < _key(want):
            walk.unexpected(row)
            position, row = row["position"], next(rows, None)
        else:
            walk.compare(want, row)
            position, want, row = row["position"], next(wants, None), next(rows, None)
        walk.report.checked += 1
        if progress is not None and walk.report.checked % 10000 == 0:
            progress(position, stop)
    if progress is not None:
        progress(stop, stop)
    return walk.report

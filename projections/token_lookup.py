"""Token lookup read model: "is this token live, whose is it", for validation, introspection and listing.

One row per token (access or refresh), keyed by its id and carrying its project (the tenant; NULL for dashboard
tokens, which are platform-wide). A token's row leaves the hot ``token_lookup`` table, which every API request reads,
for ``token_expired``, read only by listings, once the token is past its expiry: when the sweep records its
``TokenExpired``, or, for a revoked or used-up token, once the model applies an event later than its expiry
(``projections.token_expiry``). The hot table holds live tokens and recently ended ones, not the whole history.

Ending a token updates its row in place, and no index of the hot table reads the columns that change (``status``
and the ``ended_*`` ones, not even in a predicate), so PostgreSQL makes it a heap-only (HOT) update: no new entry in
any index. The table keeps room on its pages for that (``fillfactor``).

A revoked token is refused before this model applies its ``TokenRevoked``: the event store lists it in
``revoked_tokens`` in the same transaction (``infrastructure.recorder``), and every check reads both. Revocations that
select tokens here (a client's, a user's) first wait until this model is current; a family's revocation from a
live presented refresh token (a logout) waits only until the model holds that token (``families_as_of``).
"""

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composable, Literal

from application.expiry import DueToken
from application.ports import FamilySelection
from domain.token import Token
from projections.base import ReadModel
from projections.token_expiry import (
    EXPIRED_TABLE,
    HORIZON_TABLE,
    behind_horizon,
    expired_table_statements,
    move_ended_sql,
    move_expired,
)

# Written through by the event store's recorder in the transaction of every TokenRevoked (infrastructure.recorder).
REVOKED_TOKENS_TABLE = "revoked_tokens"
# The model's event types in the order of a token's life: the order a batch applies them in (``apply_events``).
LIFECYCLE: tuple[type, ...] = (Token.TokenIssued, Token.TokenRefreshed, Token.TokenRevoked, Token.TokenExpired)
COLUMNS = ("token_id", "project_id", "kind", "client_id", "user_id", "family_id", "parent_id", "scope",
           "grant_type", "issued_at", "expires_at", "status", "ended_at", "ended_reason", "ended_by")


def families_select(lookup: Composable, ids: str) -> Composable:
    """The active tokens (id, family, parent) of the refresh families of the active tokens the array parameter
    ``ids`` names (``%s`` or ``%(name)s``). Through an array, not a join: with no statistics yet (a young table,
    autovacuum off) the planner hashes a join over a scan of every active row; this is two index scans whatever it
    knows."""
    return SQL("SELECT token_id, family_id, parent_id FROM {lookup} WHERE family_id = ANY(ARRAY("
               "SELECT family_id FROM {lookup} WHERE token_id = ANY({ids}) AND family_id IS NOT NULL "
               "AND status = 'active')) AND status = 'active'").format(lookup=lookup, ids=SQL(ids))


def selections_of(rows: Sequence[Any], token_ids: Sequence[UUID]) -> dict[UUID, FamilySelection]:
    """``families_as_of``'s answer from its rows (each active token of the families, with its family and parent)."""
    wanted = set(token_ids)
    live: dict[UUID, list[UUID]] = {}
    for row in rows:
        live.setdefault(row["family_id"], []).append(row["token_id"])
    return {row["token_id"]: FamilySelection(family_id=row["family_id"], parent_id=row["parent_id"],
                                             live=list(live[row["family_id"]]))
            for row in rows if row["token_id"] in wanted}


@dataclass(frozen=True, slots=True)
class TokenRow:
    """A token's metadata (never its value)."""

    token_id: UUID
    project_id: UUID | None
    kind: str
    client_id: str
    user_id: UUID | None
    family_id: UUID | None
    parent_id: UUID | None
    scope: str
    grant_type: str
    issued_at: datetime
    expires_at: datetime
    status: str
    ended_at: datetime | None
    ended_reason: str | None
    ended_by: str | None

    def as_of(self, now: datetime) -> "TokenRow":
        """The row as it stands at ``now``: an ``active`` row past its expiry instant is shown as the expiry sweep
        records it (``token_expiry.move_expired``: ``expired``, ended at its expiry by ``system``), so a listing
        shows the same fields whether or not a sweep has reached it yet."""
        if self.status == "active" and now >= self.expires_at:
            return replace(self, status="expired", ended_at=self.expires_at, ended_reason="expired", ended_by="system")
        return self


STATUS_FILTERS = {
    "active": SQL("status = 'active' AND expires_at > %(now)s"),
    "expired": SQL("(status = 'expired' OR (status = 'active' AND expires_at <= %(now)s))"),
    "revoked": SQL("status = 'revoked'"),
    "used": SQL("status = 'used'"),
}


@dataclass(frozen=True, slots=True)
class TokenQuery:
    """One page of a project's tokens, newest first, after the cursor ``(issued_at, token_id)`` when given."""

    project_id: UUID
    now: datetime
    limit: int
    status: str | None = None
    client_id: str | None = None
    user_id: UUID | None = None
    after: tuple[datetime, UUID] | None = None

    def where(self) -> tuple[Composable, dict[str, Any]]:
        """The WHERE clause and its parameters."""
        clauses: list[Composable] = [SQL("project_id = %(project_id)s")]
        params: dict[str, Any] = {"project_id": self.project_id, "now": self.now}
        if self.status is not None:
            clauses.append(STATUS_FILTERS[self.status])
        if self.client_id is not None:
            clauses.append(SQL("client_id = %(client_id)s"))
            params["client_id"] = self.client_id
        if self.user_id is not None:
            clauses.append(SQL("user_id = %(user_id)s"))
            params["user_id"] = self.user_id
        if self.after is not None:
            clauses.append(SQL("(issued_at, token_id) < (%(after_at)s, %(after_id)s)"))
            params["after_at"], params["after_id"] = self.after
        return SQL(" AND ").join(clauses), params


class TokenLookupView(ReadModel):
    """``token_lookup``: one row per token."""

    name = "token_lookup"
    # ``client_last_used``: each project client's newest token, for the clients listing. Kept here because this
    # model already decodes every TokenIssued; a second model decoding them all again cost issuance about 20%.
    tables = ("token_lookup", "client_last_used", EXPIRED_TABLE, HORIZON_TABLE)
    tenant_tables = ("token_lookup", "client_last_used", EXPIRED_TABLE)
    keyed_writes = True
    move_limit = 5000  # ended rows moved by expiry in one batch at most (see projections.token_expiry)
    topics = frozenset(get_topic(cls) for cls in LIFECYCLE)

    def create_statements(self) -> list[Composable]:
        """The table and the indexes of its queries."""
        table = self.table("token_lookup")
        return [
            SQL("CREATE TABLE IF NOT EXISTS {} (token_id uuid PRIMARY KEY, project_id uuid, kind text NOT NULL, "
                "client_id text NOT NULL, user_id uuid, family_id uuid, parent_id uuid, scope text NOT NULL, "
                "grant_type text NOT NULL, issued_at timestamptz NOT NULL, expires_at timestamptz NOT NULL, "
                "status text NOT NULL, ended_at timestamptz, ended_reason text, ended_by text)").format(table),
            # Room on each page for a HOT update's new row version (inserts fill pages to 85%); set once, not at every
            # start (the ALTER takes a lock that waits on autovacuum).
            SQL("DO $$ BEGIN IF NOT coalesce((SELECT 'fillfactor=85' = ANY(reloptions) FROM pg_class "
                "WHERE oid = {}::regclass), false) THEN ALTER TABLE {} SET (fillfactor = 85); END IF; END $$").format(
                Literal(table.as_string(None)), table),
            SQL("CREATE INDEX IF NOT EXISTS token_lookup_in_family_idx ON {} (family_id) WHERE family_id IS NOT NULL")
            .format(table),
            SQL("DROP INDEX IF EXISTS {}").format(self.table("token_lookup_family_idx")),  # WHERE status = 'active'
            SQL("CREATE INDEX IF NOT EXISTS token_lookup_project_idx ON {} (project_id, issued_at, token_id)")
            .format(table),
            # Only people's tokens have a user: an API key's tokens (most of them) need no entry here.
            SQL("CREATE INDEX IF NOT EXISTS token_lookup_person_idx ON {} (user_id, issued_at, token_id) "
                "WHERE user_id IS NOT NULL").format(table),
            # Superseded: the person index above, and (client_id, status), which no query reads since every client
            # filter is a project's (token_lookup_project_client_idx). Each cost every insert and revocation.
            SQL("DROP INDEX IF EXISTS {}").format(self.table("token_lookup_user_idx")),
            SQL("DROP INDEX IF EXISTS {}").format(self.table("token_lookup_client_idx")),
            SQL("CREATE TABLE IF NOT EXISTS {} (project_id uuid NOT NULL, client_id text NOT NULL, "
                "last_used_at timestamptz NOT NULL, PRIMARY KEY (project_id, client_id))")
            .format(self.table("client_last_used")),
            SQL("CREATE INDEX IF NOT EXISTS token_lookup_project_client_idx ON {} (project_id, client_id, issued_at, "
                "token_id)").format(table),
            *expired_table_statements(self),
        ]

    def __init__(self, datastore: Any, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        table = self.table("token_lookup")
        # Rendered once: composing SQL objects per statement costs more than applying the event.
        self._insert_sql = SQL(
            "INSERT INTO {} SELECT r.*, 'active', NULL, NULL, NULL FROM unnest(%b::uuid[], %b::uuid[], %b::text[], "
            "%b::text[], %b::uuid[], %b::uuid[], %b::uuid[], %b::text[], %b::text[], %b::timestamptz[], "
            "%b::timestamptz[]) AS r ON CONFLICT (token_id) DO NOTHING").format(table).as_string(None)
        # Both answer the rows they ended that are already behind the horizon (``projections.token_expiry``). A used
        # refresh token may already be in the expired table when its family is revoked: it is revoked there.
        self._revoke_sql = (SQL(
            "WITH r AS (SELECT * FROM unnest(%b::uuid[], %b::timestamptz[], %b::text[], %b::text[]) AS r(id, at, "
            "reason, by)), ended AS (UPDATE {hot} AS t SET status = 'revoked', ended_at = r.at, "
            "ended_reason = r.reason, ended_by = r.by FROM r WHERE t.token_id = r.id "
            "AND t.status IN ('active', 'used') RETURNING t.token_id, t.expires_at), "
            "cold AS (UPDATE {cold} AS t SET status = 'revoked', ended_at = r.at, ended_reason = r.reason, "
            "ended_by = r.by FROM r WHERE t.token_id = r.id AND t.status = 'used') ").format(
            hot=table, cold=self.table(EXPIRED_TABLE)) + behind_horizon(self)).as_string(None)
        self._use_sql = (SQL(
            "WITH ended AS (UPDATE {} AS t SET status = 'used', ended_at = r.at, ended_reason = 'refreshed', "
            "ended_by = r.by FROM unnest(%b::uuid[], %b::timestamptz[], %b::text[]) AS r(id, at, by) "
            "WHERE t.token_id = r.id AND t.status = 'active' RETURNING t.token_id, t.expires_at) ").format(table)
            + behind_horizon(self)).as_string(None)
        self._move_ended_sql = move_ended_sql(self)
        # Each batch of logouts reads it (``families_as_of``): composing it per call cost the batch about 80 µs.
        self._families_sql = families_select(table, "%s").as_string(None)
        self._last_used_sql = SQL(
            "INSERT INTO {} AS t SELECT * FROM unnest(%b::uuid[], %b::text[], %b::timestamptz[]) "
            "ON CONFLICT (project_id, client_id) DO UPDATE "
            "SET last_used_at = GREATEST(t.last_used_at, EXCLUDED.last_used_at)").format(
            self.table("client_last_used")).as_string(None)

    def apply_events(self, curs: Cursor[DictRow], events: Sequence[Any]) -> None:
        """Applies the batch's token events, all those of one type in one statement, then moves each project
        client's ``last_used_at`` once. Then ended rows past the batch's horizon move to the expired table.

        The types are applied in the order of a token's life (``LIFECYCLE``): a token's own events come in that
        order (issued; then used up, revoked or expired; a used refresh token may still be revoked with its family),
        and events of different tokens touch different rows, so the result is that of applying the events one by
        one. Grouping only consecutive events of a type cost two statements per refresh (its TokenRefreshed
        between the TokenIssued of other requests) and as many in any mixed traffic."""
        if not events:
            return
        by_type: dict[type, list[Any]] = {}
        for event in events:
            by_type.setdefault(type(event), []).append(event)
        late: list[UUID] = []
        for kind in sorted(by_type, key=_lifecycle_rank):
            late += self._apply_run(curs, kind, by_type[kind])
        curs.execute(self._move_ended_sql, {"latest": max(e.timestamp for e in events), "late": late,
                                            "limit": self.move_limit})
        last_used: dict[tuple[UUID, str], datetime] = {}
        for event in events:
            if isinstance(event, Token.TokenIssued) and event.project_id is not None:
                key = (event.project_id, event.client_id)
                last_used[key] = max(event.issued_at, last_used.get(key, event.issued_at))
        if last_used:
            keys = sorted(last_used)  # one order for every writer: no deadlock between concurrent upserts
            curs.execute(self._last_used_sql, ([k[0] for k in keys], [k[1] for k in keys],
                                               [last_used[k] for k in keys]))

    def _apply_run(self, curs: Cursor[DictRow], kind: type, run: list[Any]) -> list[UUID]:
        """Applies the batch's events of one type; returns the ids of rows they ended behind the horizon (usually
        none)."""
        if issubclass(kind, Token.TokenIssued):
            self._insert_issued(curs, run)
        elif issubclass(kind, Token.TokenExpired):
            move_expired(self, curs, [e.originator_id for e in run])
        elif issubclass(kind, Token.TokenRefreshed):
            curs.execute(self._use_sql, ([e.originator_id for e in run], [e.timestamp for e in run],
                                         [e.actor for e in run]))
            return [row["token_id"] for row in curs.fetchall()]
        elif issubclass(kind, Token.TokenRevoked):
            curs.execute(self._revoke_sql, ([e.originator_id for e in run], [e.timestamp for e in run],
                                            [e.reason for e in run], [e.actor for e in run]))
            return [row["token_id"] for row in curs.fetchall()]
        return []

    def _insert_issued(self, curs: Cursor[DictRow], issued: list[Any]) -> None:
        """Inserts a run of ``TokenIssued`` rows in one statement, a column per array (binary: no text to format
        or parse on either side)."""
        rows = [(e.originator_id, e.project_id, str(e.kind), e.client_id, e.user_id, e.family_id, e.parent_id,
                 e.scope, e.grant_type, e.issued_at, e.expires_at) for e in issued]
        curs.execute(self._insert_sql, [list(column) for column in zip(*rows, strict=True)])

    def apply(self, curs: Cursor[DictRow], event: Any) -> None:
        """Applies a token event."""
        self.apply_events(curs, [event])

    def _select(self, where: Composable, params: tuple[Any, ...], table: str = "token_lookup") -> list[TokenRow]:
        query = SQL("SELECT {} FROM {} WHERE ").format(SQL(", ").join(map(SQL, COLUMNS)), self.table(table)) + where
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(query, params, prepare=True)
            return [TokenRow(**row) for row in curs.fetchall()]

    def get(self, token_id: UUID) -> TokenRow | None:
        """Returns one token's row, live or expired."""
        rows = self._select(SQL("token_id = %s"), (token_id,))
        if not rows:
            rows = self._select(SQL("token_id = %s"), (token_id,), table=EXPIRED_TABLE)
        return rows[0] if rows else None

    def is_revoked(self, token_id: UUID) -> bool:
        """Whether the token has been revoked (or used up); an unknown token is not, it may be just issued.

        A revocation is in ``revoked_tokens`` the instant it commits (the recorder writes it through, see
        ``infrastructure.recorder``) and in this model's status once the projection applied it. A row moved to the
        expired table (its token past expiry by the database's clock) is not read here: its ``exp`` refuses it, and
        its list entry stays for ``workers.expiry.PRUNE_MARGIN`` more.
        """
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(SQL("SELECT (SELECT status FROM {} WHERE token_id = %(t)s) AS status, "
                             "EXISTS (SELECT FROM {} WHERE token_id = %(t)s) AS written_through").format(
                self.table("token_lookup"), self.table(REVOKED_TOKENS_TABLE)), {"t": token_id}, prepare=True)
            row = curs.fetchone()
        return row is not None and (row["written_through"] or row["status"] in ("revoked", "used"))

    def live_in_family(self, family_id: UUID) -> list[UUID]:
        """Ids of the family's tokens that are still active."""
        return [r.token_id for r in self._select(SQL("family_id = %s AND status = 'active'"), (family_id,))]

    def families_as_of(self, token_ids: Sequence[UUID]) -> dict[UUID, FamilySelection]:
        """For each of ``token_ids`` whose row this table holds as active and that belongs to a refresh family: the
        family, the token's parent and the family's active token ids, in one query for them all (a batch of
        logouts). A token the table lacks, or holds in another status (used, revoked, expired), is left out.

        The model applies the store's events in order and commits each batch's rows with its position, so holding
        that row means it has applied every event up to that token's issuance. A row already moved to the expired
        table counts as missing (that table has no family index): the caller then waits. A used token is left out
        because from it the streams lead through every rotation since, one read each: the caller's general path
        waits for the model instead.
        """
        if not token_ids:
            return {}
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._families_sql, (list(token_ids),), prepare=True)
            return selections_of(curs.fetchall(), token_ids)

    def live_matching(self, *, project_id: UUID, client_id: str | None = None, user_id: UUID | None = None,
                      token_id: UUID | None = None, now: datetime) -> list[UUID]:
        """Ids of the project's active, unexpired tokens matching exactly one of the filters."""
        column, value = ("token_id", token_id) if token_id else ("client_id", client_id) if client_id else (
            "user_id", user_id)
        where = SQL("project_id = %s AND {} = %s AND status = 'active' AND expires_at > %s").format(SQL(column))
        return [r.token_id for r in self._select(where, (project_id, value, now))]

    def live_of_user(self, user_id: UUID, *, now: datetime) -> list[UUID]:
        """Ids of a person's active, unexpired tokens in every project and none (an operator disabling the account:
        ``application.users``); an index range scan (``token_lookup_person_idx``)."""
        where = SQL("user_id = %s AND status = 'active' AND expires_at > %s")
        return [r.token_id for r in self._select(where, (user_id, now))]

    def page(self, query: TokenQuery) -> list[TokenRow]:
        """A page of the project's tokens (metadata only), newest first."""
        where, params = query.where()
        params["limit"] = query.limit
        columns = SQL(", ").join(map(SQL, COLUMNS))
        order = SQL(" ORDER BY issued_at DESC, token_id DESC LIMIT %(limit)s")
        # Tokens past their expiry live in the expired table (swept, or ended before): only a listing of active
        # tokens does without it (each side is an index scan in order, merged).
        sources = ["token_lookup"] if query.status == "active" else ["token_lookup", EXPIRED_TABLE]
        parts = [SQL("(SELECT {} FROM {} WHERE ").format(columns, self.table(t)) + where + order + SQL(")")
                 for t in sources]
        statement = SQL(" UNION ALL ").join(parts) + order if len(parts) > 1 else parts[0]
        return [TokenRow(**row) for row in self.tenant_select(query.project_id, statement, params)]

    def due_for_expiry(self, now: datetime, limit: int, after: tuple[datetime, UUID] | None) -> list[DueToken]:
        """Active tokens past their expiry, by ``(expires_at, token_id)``, after the cursor ``after`` (the sweep
        pages with it, so rows it has just expired but the model has not moved yet are not re-read)."""
        where = SQL("status = 'active' AND expires_at <= %s")
        params: tuple[Any, ...] = (now,)
        if after is not None:
            where += SQL(" AND (expires_at, token_id) > (%s, %s)")
            params += after
        query = SQL("SELECT token_id, expires_at, project_id, client_id, kind FROM {} WHERE ").format(
            self.table("token_lookup")) + where + SQL(" ORDER BY expires_at, token_id LIMIT %s")
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(query, (*params, limit))
            return [DueToken(**row) for row in curs.fetchall()]

    def count_due(self, now: datetime) -> int:
        """How many active tokens are past their expiry (the sweep's backlog: the expiry index's range up to
        ``now``, each row's status read from the table)."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(SQL("SELECT count(*) AS n FROM {} WHERE status = 'active' AND expires_at <= %s")
                         .format(self.table("token_lookup")), (now,))
            row = curs.fetchone()
            return int(row["n"]) if row else 0

    def prune_written_through(self, margin: timedelta, limit: int) -> int:
        """Deletes up to ``limit`` ids from ``revoked_tokens`` whose token expired more than ``margin`` ago by the
        database's clock; how many.

        The list exists so a revocation is refused before this model applies it; once the token is past its expiry
        every check refuses it on ``exp`` alone, so its entry only costs the hot path's index. A token this model
        does not hold (a rebuild in progress, a projection behind) keeps its entry. The row may be in either table:
        an ended token's moves to the expired table once the model has seen its expiry pass, and from then on its
        entry is all that refuses it until ``exp`` does everywhere. So the time is the database's, which also bounds
        the moves (``projections.token_expiry``), not the pruning worker's own clock.
        """
        expired = SQL("SELECT r.token_id FROM {listed} r JOIN {} t ON t.token_id = r.token_id "
                      "WHERE t.expires_at < statement_timestamp() - %(margin)s")
        listed = self.table(REVOKED_TOKENS_TABLE)
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(SQL("DELETE FROM {listed} WHERE token_id IN (SELECT token_id FROM ({hot} UNION ALL {cold}) "
                             "AS e LIMIT %(limit)s)").format(
                listed=listed, hot=expired.format(self.table("token_lookup"), listed=listed),
                cold=expired.format(self.table(EXPIRED_TABLE), listed=listed)), {"margin": margin, "limit": limit})
            return curs.rowcount

    def sizes(self) -> dict[str, int]:
        """Row counts of the hot and the expired table and of the revocation list (for status and tests)."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            counts = {}
            for name in ("token_lookup", EXPIRED_TABLE, REVOKED_TOKENS_TABLE):
                curs.execute(SQL("SELECT count(*) AS n FROM {}").format(self.table(name)))
                row = curs.fetchone()
                counts[name] = int(row["n"]) if row else 0
            return counts


def _lifecycle_rank(kind: type) -> int:
    """Where events of ``kind`` come in a token's life (``LIFECYCLE``); other types last."""
    return next((rank for rank, stage in enumerate(LIFECYCLE) if issubclass(kind, stage)), len(LIFECYCLE))

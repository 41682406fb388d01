"""Candidates of the orphan sweep: active, unexpired tokens whose client the clients model lists as revoked.

A client's deletion revokes its tokens in the transaction of its ``ClientRevoked`` and then, in late passes, the
tokens issued while it ran. A process that dies between the two leaves those late tokens live; the sweep
(``application.orphans``) finds them here and decides on the event streams. These rows are only candidates: the
clients model may lag or, in principle, disagree with the store, so nothing is revoked on their word alone.

The query joins two read models' tables in the same database: the revoked clients, read through the partial index
``client_view_revoked_idx`` (``projections.clients``: one entry per revoked client, none for live ones), then each
client's rows of the hot token table through ``token_lookup_project_client_idx``, keyed by project and client. Old
deletions cost one index probe each: their tokens' rows left the hot table when they expired. A recently deleted
busy client costs a read of its hot rows, revoked ones included, until they expire (the hot table has no index on
``status``, on purpose: see ``projections.token_lookup``). It is not prepared, so each run is planned with current
statistics, and pages are keyed by a cursor, never by an offset.
"""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg.sql import SQL, Composable

from application.orphans import OrphanCandidate, OrphanCursor

_ORDER = SQL(" ORDER BY t.project_id, t.client_id, t.issued_at, t.token_id LIMIT %(limit)s")


class OrphanedTokens:
    """The orphan sweep's query over the token lookup model's hot table and the clients model's table."""

    def __init__(self, lookup: Any, clients: Any) -> None:
        self._datastore = lookup.datastore
        self._from = SQL(
            "FROM {clients} c JOIN {hot} t ON t.project_id = c.project_id AND t.client_id = c.client_id "
            "WHERE c.revoked_at IS NOT NULL AND t.status = 'active' AND t.expires_at > %(now)s").format(
            clients=clients.table("client_view"), hot=lookup.table("token_lookup"))

    def orphaned_tokens(self, now: datetime, limit: int, after: OrphanCursor | None) -> list[OrphanCandidate]:
        """Up to ``limit`` candidates by ``(project_id, client_id, issued_at, token_id)``, after the cursor ``after``.

        The cursor's client bound is also put on the clients side, so a page starts its index scan at the cursor's
        client instead of at the first revoked one.
        """
        where: Composable = SQL("")
        params: dict[str, Any] = {"now": now, "limit": limit}
        if after is not None:
            where = SQL(" AND (c.project_id, c.client_id) >= (%(p)s, %(c)s) "
                        "AND (t.project_id, t.client_id, t.issued_at, t.token_id) > (%(p)s, %(c)s, %(at)s, %(id)s)")
            params.update(p=after[0], c=after[1], at=after[2], id=after[3])
        query = SQL("SELECT t.token_id, t.project_id, t.client_id, t.issued_at ") + self._from + where + _ORDER
        return [OrphanCandidate(**row) for row in self._fetch(query, params)]

    def count(self, now: datetime) -> int:
        """How many candidates there are (``keyledger workers status``: the sweep's backlog)."""
        rows = self._fetch(SQL("SELECT count(*) AS n ") + self._from, {"now": now})
        return int(rows[0]["n"]) if rows else 0

    def _fetch(self, query: Composable, params: dict[str, Any]) -> Sequence[Any]:
        with self._datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(query, params)
            return curs.fetchall()

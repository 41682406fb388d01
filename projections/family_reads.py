"""What a batch of logouts decides on, read in one statement: the token lookup model's families of the presented
refresh tokens (``TokenLookupView.families_as_of``) and the event streams of every token so selected and of each
presented token's parent.

Read one after the other, the two cost a batch two round trips, and a statement's client-side cost (the pool's
checkout, the parameters' dumping, the rows) is about a third of a small batch's: the group committer's batches of
logouts hold three or four. One statement also reads both in one snapshot, which keeps what the two-step read
ensured by its order (the model first, the streams after): the model commits a token's row after the token's events,
so no token the model selects lacks its stream; a token issued after the snapshot is in neither, and comes from a
rotation of a presented token, whose stream then moved: the batch's save conflicts on it and the request takes the
general path (``application.oauth.family_revocation``).
"""

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from psycopg.sql import SQL, Identifier

from application.ports import FamilySelection
from projections.token_lookup import TokenLookupView, families_select, selections_of


class FamilyReads:
    """The one-statement read of a batch of logouts, on the token lookup model's table and the event store's."""

    def __init__(self, view: TokenLookupView, events_table: str) -> None:
        self._datastore = view.datastore
        # The streams through an array, not a join, as the families (``families_select``): index scans.
        self._sql = SQL(
            "WITH fam AS MATERIALIZED ({families}), "
            "wanted AS (SELECT token_id AS id FROM fam UNION "
            "SELECT parent_id FROM fam WHERE token_id = ANY(%(ids)s) AND parent_id IS NOT NULL) "
            "SELECT 0 AS part, token_id, family_id, parent_id, 0 AS version, NULL::text AS topic, "
            "NULL::bytea AS state FROM fam "
            "UNION ALL SELECT 1, e.originator_id, NULL, NULL, e.originator_version, e.topic, e.state "
            "FROM {events} AS e WHERE e.originator_id = ANY(ARRAY(SELECT id FROM wanted)) "
            "ORDER BY part, token_id, version").format(
            families=families_select(view.table("token_lookup"), "%(ids)s"),
            events=SQL("{}.{}").format(Identifier(view.datastore.schema), Identifier(events_table)),
        ).as_string(None)

    def read(self, token_ids: Sequence[UUID]) -> tuple[dict[UUID, FamilySelection], list[StoredEvent]]:
        """``families_as_of(token_ids)``, and the stored events of the selected tokens and of the presented tokens'
        parents, grouped by stream in version order."""
        if not token_ids:
            return {}, []
        with self._datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._sql, {"ids": list(token_ids)}, prepare=True)
            rows = curs.fetchall()
        families = [row for row in rows if row["part"] == 0]
        events = [_stored(row) for row in rows if row["part"] == 1]
        return selections_of(families, token_ids), events


def _stored(row: Any) -> StoredEvent:
    """A stored event from an events row of the statement (its stream's id under the ``token_id`` column)."""
    return StoredEvent(originator_id=row["token_id"], originator_version=row["version"], topic=row["topic"],
                       state=bytes(row["state"]))

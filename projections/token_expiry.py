"""The token lookup's expired table: where ``TokenExpired`` moves a token's row out of the hot table.

Kept apart from ``projections/token_lookup.py`` so that file stays about the hot path. The expired table has the
hot table's columns and the indexes of the listing's queries; its rows are final (an expired token has no later
event that changes its row).
"""

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composable

EXPIRED_TABLE = "token_expired"

_COLUMNS = SQL("token_id, project_id, kind, client_id, user_id, family_id, parent_id, scope, grant_type, issued_at, "
               "expires_at")


def expired_table_statements(view: Any) -> list[Composable]:
    """DDL of the expired table, and the sweep's index on the hot table (active tokens by expiry)."""
    table = view.table(EXPIRED_TABLE)
    return [
        SQL("CREATE TABLE IF NOT EXISTS {} (token_id uuid PRIMARY KEY, project_id uuid, kind text NOT NULL, "
            "client_id text NOT NULL, user_id uuid, family_id uuid, parent_id uuid, scope text NOT NULL, "
            "grant_type text NOT NULL, issued_at timestamptz NOT NULL, expires_at timestamptz NOT NULL, "
            "status text NOT NULL, ended_at timestamptz, ended_reason text, ended_by text)").format(table),
        SQL("CREATE INDEX IF NOT EXISTS token_expired_project_idx ON {} (project_id, issued_at, token_id)")
        .format(table),
        SQL("CREATE INDEX IF NOT EXISTS token_expired_project_client_idx ON {} (project_id, client_id, issued_at, "
            "token_id)").format(table),
        SQL("CREATE INDEX IF NOT EXISTS token_lookup_expiry_idx ON {} (expires_at, token_id) WHERE status = 'active'")
        .format(view.table("token_lookup")),
    ]


def move_expired(view: Any, curs: Cursor[DictRow], token_ids: Sequence[UUID]) -> None:
    """Moves the active rows of ``token_ids`` to the expired table, status ``expired``, in one statement.

    The row's end is its expiry instant (what the API has shown since then), recorded by ``system``.
    """
    curs.execute(SQL("WITH moved AS (DELETE FROM {hot} WHERE token_id = ANY(%b) AND status = 'active' "
                     "RETURNING {cols}) INSERT INTO {cold} SELECT {cols}, 'expired', expires_at, 'expired', 'system' "
                     "FROM moved "
                     "ON CONFLICT (token_id) DO NOTHING").format(hot=view.table("token_lookup"),
                                                                  cold=view.table(EXPIRED_TABLE), cols=_COLUMNS),
                 (list(token_ids),))

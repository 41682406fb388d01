"""The token lookup's expired table: where a token's row goes once the token is past its expiry and has ended.

Two moves take a row out of the hot table, which every API request reads, so that it holds live tokens and the
recently ended ones, not the whole history:

- ``TokenExpired`` (recorded by the expiry sweep for an active token past its expiry) moves the row, status
  ``expired``;
- a revoked or used-up token's row moves, status kept, once the model has applied a token event later than the
  token's expiry (its *horizon*): from then on the token's ``exp`` refuses it everywhere, and the revocation list
  (``revoked_tokens``) keeps its entry until well after that (``workers.expiry.PRUNE_MARGIN``).

The second move depends on the events (their timestamps) and the database's clock, never on the clock of the process
that applies them, so a rebuild ends with the same rows in the same table as the live model, whatever its batches:
once the model is current and has drained any backlog (at most ``move_limit`` rows a batch; a batch comes only with
token events), a row is in the expired table exactly when it was swept, or ended with its expiry before the latest
event time the model applied (capped by the database's clock). The horizon is kept in the database, beside the rows,
so runners of several processes share it.

Kept apart from ``projections/token_lookup.py`` so that file stays about the hot path. The expired table has the
hot table's columns and the indexes of the listing's queries; an update that ends a used token moved here (its
family revoked later) is applied here too, so where a row is never changes what it says.
"""

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composable

EXPIRED_TABLE = "token_expired"
HORIZON_TABLE = "token_lookup_horizon"

_COLUMNS = SQL("token_id, project_id, kind, client_id, user_id, family_id, parent_id, scope, grant_type, issued_at, "
               "expires_at")
_ENDED = SQL("status, ended_at, ended_reason, ended_by")


def expired_table_statements(view: Any) -> list[Composable]:
    """DDL of the expired table, of the horizon, and the hot table's expiry index (the sweep's and the moves').

    The expiry index has no condition on ``status``: an index whose predicate reads a column the model updates
    makes every such update a non-HOT one (a new index entry in every index of the table).
    """
    table, hot = view.table(EXPIRED_TABLE), view.table("token_lookup")
    return [
        SQL("CREATE TABLE IF NOT EXISTS {} (token_id uuid PRIMARY KEY, project_id uuid, kind text NOT NULL, "
            "client_id text NOT NULL, user_id uuid, family_id uuid, parent_id uuid, scope text NOT NULL, "
            "grant_type text NOT NULL, issued_at timestamptz NOT NULL, expires_at timestamptz NOT NULL, "
            "status text NOT NULL, ended_at timestamptz, ended_reason text, ended_by text)").format(table),
        SQL("CREATE INDEX IF NOT EXISTS token_expired_project_idx ON {} (project_id, issued_at, token_id)")
        .format(table),
        SQL("CREATE INDEX IF NOT EXISTS token_expired_project_client_idx ON {} (project_id, client_id, issued_at, "
            "token_id)").format(table),
        SQL("CREATE INDEX IF NOT EXISTS token_lookup_expires_idx ON {} (expires_at, token_id)").format(hot),
        SQL("DROP INDEX IF EXISTS {}").format(view.table("token_lookup_expiry_idx")),  # WHERE status = 'active'
        SQL("CREATE TABLE IF NOT EXISTS {} (id smallint PRIMARY KEY CHECK (id = 1), horizon timestamptz NOT NULL)")
        .format(view.table(HORIZON_TABLE)),
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


def behind_horizon(view: Any) -> Composable:
    """The tail of a statement that ends rows (a CTE ``ended (token_id, expires_at)``): the ids of those whose
    expiry is already behind the horizon. The move's range (from the horizon on) would miss them: an event can be
    applied after events decided later than it (commit order is not decision order)."""
    return SQL("SELECT token_id FROM ended WHERE expires_at < (SELECT horizon FROM {} WHERE id = 1)").format(
        view.table(HORIZON_TABLE))


def move_ended_sql(view: Any) -> str:
    """The statement that moves ended rows past the horizon and advances it (rendered once by the view).

    Parameters: the batch's latest event time, the ids of rows the batch ended behind the old horizon
    (``behind_horizon``) and the most rows to move by expiry in one batch. Any other ended row to move has its
    expiry between the old horizon and the new one: the expiry index finds them in order, and each batch reads only
    that slice. The first batch of a model (no horizon yet) starts from the earliest expiry; a slice larger than
    the limit (an upgrade's backlog, a long pause) is moved a limit per batch, the horizon advancing only as far as
    the rows moved, so no batch holds the model's lock for long.

    The horizon never passes the database's clock: an event stamped by a host whose clock runs ahead does not move a
    token that is still live by the database's time. So a rebuild ends equal to the live model once the database's
    clock has passed the latest event time (at once, unless a clock ran ahead).
    """
    return SQL(
        "WITH h AS (SELECT horizon FROM {horizon} WHERE id = 1), "
        "bound AS (SELECT GREATEST(LEAST(%(latest)s, statement_timestamp()), (SELECT horizon FROM h)) AS at), "
        "due AS (SELECT token_id, expires_at FROM {hot} WHERE status IN ('revoked', 'used') "
        "AND expires_at >= COALESCE((SELECT horizon FROM h), '-infinity') AND expires_at < (SELECT at FROM bound) "
        "ORDER BY expires_at, token_id LIMIT %(limit)s), "
        "by_expiry AS (DELETE FROM {hot} WHERE token_id IN (SELECT token_id FROM due) RETURNING {cols}, {ended}), "
        "late AS (DELETE FROM {hot} WHERE token_id = ANY(%(late)s) AND status IN ('revoked', 'used') "
        "AND expires_at < (SELECT horizon FROM h) RETURNING {cols}, {ended}), "
        "kept AS (INSERT INTO {cold} SELECT * FROM by_expiry UNION ALL SELECT * FROM late "
        "ON CONFLICT (token_id) DO NOTHING) "
        "INSERT INTO {horizon} AS t (id, horizon) VALUES (1, CASE WHEN (SELECT count(*) FROM due) < %(limit)s "
        "THEN (SELECT at FROM bound) ELSE (SELECT max(expires_at) FROM due) END) "
        "ON CONFLICT (id) DO UPDATE SET horizon = GREATEST(t.horizon, EXCLUDED.horizon)").format(
        horizon=view.table(HORIZON_TABLE), hot=view.table("token_lookup"), cold=view.table(EXPIRED_TABLE),
        cols=_COLUMNS, ended=_ENDED).as_string(None)

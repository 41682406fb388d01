"""The audit ledger's filtered pages and its ``since`` probe read the project-only partial indexes (platform
entries are in the position indexes only): each filter of a page is one index range scan."""

import pytest
from psycopg.sql import SQL

from infrastructure.bootstrap import Container
from projections.audit_query import AuditQuery
from tests.integration.support import sign_up


@pytest.mark.parametrize(("filters", "index"), [({"token": True}, "audit_project_token_idx"),
                                                ({"client": True}, "audit_project_client_idx"),
                                                ({"user": True}, "audit_project_user_idx")])
def test_a_filtered_page_scans_its_project_index(quiet_container: Container, filters: dict[str, bool],
                                                 index: str) -> None:
    account = sign_up(quiet_container)
    query = AuditQuery(project_id=account.project.id, token_id=account.user.id if "token" in filters else None,
                       client_id="cli_x" if "client" in filters else None,
                       user_id=account.user.id if "user" in filters else None)
    where, params = query.where()
    assert index in plan(quiet_container, SQL("SELECT position FROM audit WHERE ") + where
                         + SQL(" ORDER BY position LIMIT 50"), params)


def test_the_since_probe_scans_the_project_reach_index(quiet_container: Container) -> None:
    account = sign_up(quiet_container)
    statement = SQL("SELECT position FROM audit WHERE project_id = %(p)s AND reach >= now() ORDER BY reach, position "
                    "LIMIT 1")
    assert "audit_project_reach_idx" in plan(quiet_container, statement, {"p": account.project.id})


def plan(container: Container, statement: SQL, params: dict[str, object]) -> str:
    """The plan PostgreSQL picks when it must use an index if one serves (the test's table is small)."""
    with container.audit.datastore.transaction(commit=False) as curs:
        curs.execute("SET LOCAL enable_seqscan = off")
        curs.execute(SQL("EXPLAIN ") + statement, params)
        return "\n".join(row["QUERY PLAN"] for row in curs.fetchall())

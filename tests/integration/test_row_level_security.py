"""Row-level security, the second line of tenant isolation: request-path reads run as a role PostgreSQL confines
to the request's project, so a query naming the wrong project, or none, returns nothing of another tenant."""

import pytest
from eventsourcing.persistence import ProgrammingError
from psycopg.sql import SQL

from application.oauth.grants import TokenRequest
from infrastructure.bootstrap import Container
from projections.base import TENANT_ROLE, ReadModel
from tests.integration.support import head, sign_up

pytestmark = pytest.mark.integration


def issue(container: Container, signed: object) -> None:
    client = signed.client  # type: ignore[attr-defined]
    container.tokens.handle(TokenRequest(grant_type="client_credentials", client_id=client.client.client_id,
                                         client_secret=client.client_secret))


@pytest.fixture
def two_projects(container: Container) -> tuple[object, object]:
    a, b = sign_up(container, project="A"), sign_up(container, project="B")
    for signed in (a, b):
        issue(container, signed)
    for view in container.views.values():
        view.wait_for(head(container))
    return a, b


TENANT_TABLES = [("token_lookup", "token_lookup"), ("token_lookup", "client_last_used"), ("clients", "client_view"),
                 ("members", "member_view"), ("secret_expiry", "secret_expiry")]


@pytest.mark.parametrize(("view_name", "table"), TENANT_TABLES)
def test_a_query_sees_only_the_request_projects_rows(container: Container, two_projects: tuple[object, object],
                                                     view_name: str, table: str) -> None:
    a, b = (s.project.id for s in two_projects)  # type: ignore[attr-defined]
    view: ReadModel = container.views[view_name]
    everything = SQL("SELECT project_id FROM {}").format(view.table(table))
    seen = {row["project_id"] for row in view.tenant_select(a, everything, ())}
    assert seen == {a}
    # The wrong project context: a query for A's rows made in B's context returns nothing.
    wrong = SQL("SELECT project_id FROM {} WHERE project_id = %s").format(view.table(table))
    assert view.tenant_select(b, wrong, (a,)) == []
    assert view.tenant_select(a, wrong, (a,)) != []


@pytest.mark.parametrize(("view_name", "table"), TENANT_TABLES)
def test_the_tenant_role_without_a_project_sees_nothing_and_writes_nothing(
        container: Container, two_projects: tuple[object, object], view_name: str, table: str) -> None:
    view: ReadModel = container.views[view_name]
    with view.datastore.transaction(commit=False) as curs:
        curs.execute(SQL("SET LOCAL ROLE {}").format(SQL(TENANT_ROLE)))
        curs.execute(SQL("SELECT count(*) AS n FROM {}").format(view.table(table)))
        assert curs.fetchone()["n"] == 0
    with pytest.raises(ProgrammingError, match="permission denied"), view.datastore.transaction(commit=False) as curs:
        curs.execute(SQL("SET LOCAL ROLE {}").format(SQL(TENANT_ROLE)))
        curs.execute(SQL("DELETE FROM {}").format(view.table(table)))


def test_the_tenant_role_cannot_bypass_row_level_security(container: Container) -> None:
    with container.app.recorder.datastore.transaction(commit=False) as curs:
        curs.execute("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = %s", (TENANT_ROLE,))
        assert curs.fetchone() == {"rolsuper": False, "rolbypassrls": False}
        curs.execute("SELECT relname FROM pg_class WHERE relrowsecurity AND relname IN ('token_lookup', "
                     "'client_view', 'member_view')")
        assert {r["relname"] for r in curs.fetchall()} == {"token_lookup", "client_view", "member_view"}
        # The users' emails are platform-wide, not tenant data: the tenant role may not read them at all.
        curs.execute("SELECT has_table_privilege(%s, 'member_user', 'SELECT') AS granted", (TENANT_ROLE,))
        assert curs.fetchone() == {"granted": False}

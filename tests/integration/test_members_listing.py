"""The members listing on the real read model: a project of 1,000 members pages through its index, each row with
its user's email, whatever order the model is fed in."""

import uuid
from typing import Any

import pytest
from psycopg.sql import SQL, Identifier

from domain.ids import user_actor
from domain.project import Project
from domain.scopes import Role
from domain.user import User
from infrastructure.bootstrap import Container
from projections.base import TENANT_ROLE, TENANT_SETTING
from tests.integration.support import head

pytestmark = pytest.mark.integration

MEMBERS = 1000


def person(tag: str) -> User:
    user_id = uuid.uuid4()
    # No password is ever checked here: a placeholder hash spares 1,000 argon2 runs.
    return User(user_id=user_id, email=f"{tag}-{user_id.hex[:10]}@Example.com", password_hash="-",
                actor=user_actor(user_id))


def big_project(container: Container) -> tuple[Project, list[User]]:
    owner = person("owner")
    project = Project(project_id=uuid.uuid4(), name="Big", owner_id=owner.id, actor=user_actor(owner.id))
    people = [person("m") for _ in range(MEMBERS)]
    for i, user in enumerate(people):
        project.add_member(user_id=user.id, role=list(Role)[i % 4], actor=user_actor(owner.id))
    container.app.save(owner, *people, project)
    return project, [owner, *people]


def test_a_project_of_a_thousand_members_pages_in_join_order_with_emails(container: Container) -> None:
    project, people = big_project(container)
    view = container.members
    view.wait_for(head(container))
    seen: list[Any] = []
    after = None
    while True:
        rows = view.page(project.id, limit=200, after=after)
        seen.extend(rows)
        if len(rows) < 200:
            break
        after = (rows[-1].since, rows[-1].user_id)
    assert [r.user_id for r in seen] == [u.id for u in people]
    assert [r.email for r in seen] == [u.email.lower() for u in people]
    assert [r.role for r in seen[:5]] == ["owner", "owner", "admin", "developer", "auditor"]
    assert view.member(project.id, people[7].id) == seen[7]


def test_the_page_query_is_an_index_range_scan_without_a_sort(container: Container) -> None:
    project, people = big_project(container)
    view = container.members
    view.wait_for(head(container))
    middle = view.member(project.id, people[500].id)
    assert middle is not None
    query, params = view.page_query(project.id, limit=51, after=(middle.since, middle.user_id))
    with view.datastore.transaction(commit=False) as curs:
        curs.execute(SQL("SET LOCAL ROLE {}").format(Identifier(TENANT_ROLE)))
        curs.execute("SELECT set_config(%s, %s, true)", (TENANT_SETTING, str(project.id)))
        # Planner costs depend on table statistics; forbidding the alternatives shows what the index can serve.
        curs.execute("SET LOCAL enable_seqscan = off")
        curs.execute("SET LOCAL enable_sort = off")
        curs.execute(SQL("EXPLAIN ") + query, params)
        plan = "\n".join(str(next(iter(row.values()))) for row in curs.fetchall())
    assert "member_view_page_idx" in plan, plan
    assert "Sort" not in plan, plan


def test_a_members_email_reaches_its_rows_whatever_the_order_of_events(container: Container) -> None:
    owner, late = person("owner"), person("late")
    project = Project(project_id=uuid.uuid4(), name="Odd", owner_id=owner.id, actor=user_actor(owner.id))
    project.add_member(user_id=late.id, role=Role.ADMIN, actor=user_actor(owner.id))
    view = container.members
    with view.datastore.transaction(commit=False) as curs:  # rolled back: the shared model is left as it was
        view.apply_events(curs, [*owner.collect_events(), *project.collect_events(), *late.collect_events()])
        curs.execute(SQL("SELECT user_id, email FROM {} WHERE project_id = %s").format(view.table("member_view")),
                     (project.id,))
        emails = {row["user_id"]: row["email"] for row in curs.fetchall()}
    assert emails == {owner.id: owner.email.lower(), late.id: late.email.lower()}

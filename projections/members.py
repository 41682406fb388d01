"""Members read model: who belongs to which project with which role, keyed by project (the tenant)."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composable

from domain.project import Project
from projections.base import ReadModel


@dataclass(frozen=True, slots=True)
class MemberRow:
    """A membership as the listing shows it."""

    user_id: UUID
    role: str
    since: datetime


class MembersView(ReadModel):
    """``member_view(project_id, user_id, role, since)``."""

    name = "members"
    tables = ("member_view",)
    tenant_tables = ("member_view",)
    topics = frozenset(get_topic(cls) for cls in (Project.ProjectCreated, Project.MemberAdded,
                                                  Project.MemberRoleChanged, Project.MemberRemoved))

    def create_statements(self) -> list[Composable]:
        """The member table and its by-user index."""
        table = self.table("member_view")
        return [
            SQL("CREATE TABLE IF NOT EXISTS {} (project_id uuid NOT NULL, user_id uuid NOT NULL, role text NOT NULL, "
                "since timestamptz NOT NULL, PRIMARY KEY (project_id, user_id))").format(table),
            SQL("CREATE INDEX IF NOT EXISTS member_view_user_idx ON {} (user_id, project_id)").format(table),
            SQL("CREATE INDEX IF NOT EXISTS member_view_page_idx ON {} (project_id, since, user_id)").format(table),
        ]

    def apply(self, curs: Cursor[DictRow], event: Any) -> None:
        """Applies a project event."""
        table = self.table("member_view")
        if isinstance(event, Project.ProjectCreated):
            row: tuple[Any, ...] = (event.originator_id, event.owner_id, "owner", event.timestamp)
        elif isinstance(event, Project.MemberAdded):
            row = (event.originator_id, event.user_id, str(event.role), event.timestamp)
        elif isinstance(event, Project.MemberRoleChanged):
            curs.execute(SQL("UPDATE {} SET role = %s WHERE project_id = %s AND user_id = %s").format(table),
                         (str(event.role), event.originator_id, event.user_id))
            return
        else:
            curs.execute(SQL("DELETE FROM {} WHERE project_id = %s AND user_id = %s").format(table),
                         (event.originator_id, event.user_id))
            return
        curs.execute(SQL("INSERT INTO {} VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING").format(table), row)

    def memberships(self, user_id: UUID) -> list[dict[str, str]]:
        """Returns the user's memberships ordered by project id."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(SQL("SELECT project_id, role FROM {} WHERE user_id = %s ORDER BY project_id").format(
                self.table("member_view")), (user_id,))
            return [{"project_id": str(r["project_id"]), "role": r["role"]} for r in curs.fetchall()]

    def page(self, project_id: UUID, *, limit: int, after: tuple[datetime, UUID] | None = None) -> list[MemberRow]:
        """A page of the project's members, longest-standing first (confined to the project by row security)."""
        where = SQL("project_id = %s")
        params: list[Any] = [project_id]
        if after is not None:
            where += SQL(" AND (since, user_id) > (%s, %s)")
            params.extend(after)
        query = SQL("SELECT user_id, role, since FROM {} WHERE ").format(self.table("member_view"))
        query += where + SQL(" ORDER BY since, user_id LIMIT %s")
        return [MemberRow(**row) for row in self.tenant_select(project_id, query, (*params, limit))]

    def since(self, project_id: UUID, user_id: UUID) -> datetime | None:
        """When the user joined the project, if the model has seen it."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(SQL("SELECT since FROM {} WHERE project_id = %s AND user_id = %s").format(
                self.table("member_view")), (project_id, user_id))
            row = curs.fetchone()
        return row["since"] if row else None

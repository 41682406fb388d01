"""Members read model: who belongs to which project with which role, keyed by project (the tenant).

Listings show each member's email, which the project's events do not carry, and a projection never loads an
aggregate. So the model also follows the users' registrations into ``member_user`` (platform-wide, not tenant data:
no project, no row-level security, no grant to the tenant role) and copies the email onto each membership row as it
is applied. A listing then reads one tenant table, confined to the request's project by row-level security, in one
index range scan. Emails never change once registered (no event changes them); if one ever does, its event must
update the copies too (``member_view_user_idx`` finds them).
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composable

from domain.ids import normalize_email
from domain.project import Project
from domain.user import User
from projections.base import ReadModel


@dataclass(frozen=True, slots=True)
class MemberRow:
    """A membership as listings show it.

    ``email`` is None only for rows applied before the model kept emails, until the model is rebuilt
    (``keyledger projections rebuild members``).
    """

    user_id: UUID
    email: str | None
    role: str
    since: datetime


class MembersView(ReadModel):
    """``member_view(project_id, user_id, role, since, email)`` and ``member_user(user_id, email)``."""

    name = "members"
    tables = ("member_view", "member_user")
    tenant_tables = ("member_view",)
    topics = frozenset(get_topic(cls) for cls in (Project.ProjectCreated, Project.MemberAdded,
                                                  Project.MemberRoleChanged, Project.MemberRemoved,
                                                  User.UserRegistered))

    def create_statements(self) -> list[Composable]:
        """The tables, the by-user index (``/v1/me``, email copies) and the page index (listings)."""
        table, users = self.table("member_view"), self.table("member_user")
        return [
            SQL("CREATE TABLE IF NOT EXISTS {} (project_id uuid NOT NULL, user_id uuid NOT NULL, role text NOT NULL, "
                "since timestamptz NOT NULL, email text, PRIMARY KEY (project_id, user_id))").format(table),
            SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS email text").format(table),
            SQL("CREATE INDEX IF NOT EXISTS member_view_user_idx ON {} (user_id, project_id)").format(table),
            SQL("CREATE INDEX IF NOT EXISTS member_view_page_idx ON {} (project_id, since, user_id)").format(table),
            SQL("CREATE TABLE IF NOT EXISTS {} (user_id uuid PRIMARY KEY, email text NOT NULL)").format(users),
        ]

    def apply(self, curs: Cursor[DictRow], event: Any) -> None:
        """Applies a project or user event."""
        table = self.table("member_view")
        if isinstance(event, User.UserRegistered):
            self._register(curs, event.originator_id, normalize_email(event.email))
        elif isinstance(event, Project.ProjectCreated | Project.MemberAdded):
            user_id = event.owner_id if isinstance(event, Project.ProjectCreated) else event.user_id
            role = "owner" if isinstance(event, Project.ProjectCreated) else str(event.role)
            curs.execute(SQL("INSERT INTO {} (project_id, user_id, role, since, email) VALUES (%s, %s, %s, %s, "
                             "(SELECT email FROM {} WHERE user_id = %s)) ON CONFLICT DO NOTHING").format(
                table, self.table("member_user")), (event.originator_id, user_id, role, event.timestamp, user_id))
        elif isinstance(event, Project.MemberRoleChanged):
            curs.execute(SQL("UPDATE {} SET role = %s WHERE project_id = %s AND user_id = %s").format(table),
                         (str(event.role), event.originator_id, event.user_id))
        else:
            curs.execute(SQL("DELETE FROM {} WHERE project_id = %s AND user_id = %s").format(table),
                         (event.originator_id, event.user_id))

    def _register(self, curs: Cursor[DictRow], user_id: UUID, email: str) -> None:
        # A user registers before any project can name them, so the update finds rows only when a model is fed
        # out of order; it keeps the copies right whatever the order.
        curs.execute(SQL("INSERT INTO {} VALUES (%s, %s) ON CONFLICT DO NOTHING").format(self.table("member_user")),
                     (user_id, email))
        curs.execute(SQL("UPDATE {} SET email = %s WHERE user_id = %s AND email IS NULL").format(
            self.table("member_view")), (email, user_id))

    def memberships(self, user_id: UUID) -> list[dict[str, str]]:
        """Returns the user's memberships ordered by project id."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(SQL("SELECT project_id, role FROM {} WHERE user_id = %s ORDER BY project_id").format(
                self.table("member_view")), (user_id,))
            return [{"project_id": str(r["project_id"]), "role": r["role"]} for r in curs.fetchall()]

    def page(self, project_id: UUID, *, limit: int, after: tuple[datetime, UUID] | None = None) -> list[MemberRow]:
        """A page of the project's members in the order they joined, after the ``(since, user_id)`` of ``after``
        (row-level security confines it to the project)."""
        query, params = self.page_query(project_id, limit=limit, after=after)
        return [MemberRow(**row) for row in self.tenant_select(project_id, query, params)]

    def page_query(self, project_id: UUID, *, limit: int,
                   after: tuple[datetime, UUID] | None = None) -> tuple[Composable, tuple[Any, ...]]:
        """The page query and its parameters: ``member_view_page_idx`` serves it as one index range scan in the
        listing's order, so a page costs the same in a project of 1,000 members as in one of 3."""
        where = SQL("project_id = %s")
        params: list[Any] = [project_id]
        if after is not None:
            where += SQL(" AND (since, user_id) > (%s, %s)")
            params.extend(after)
        query = SQL("SELECT user_id, email, role, since FROM {} WHERE ").format(self.table("member_view"))
        return query + where + SQL(" ORDER BY since, user_id LIMIT %s"), (*params, limit)

    def member(self, project_id: UUID, user_id: UUID) -> MemberRow | None:
        """One member of the project, if the model shows them."""
        query = SQL("SELECT user_id, email, role, since FROM {} WHERE project_id = %s AND user_id = %s").format(
            self.table("member_view"))
        rows = self.tenant_select(project_id, query, (project_id, user_id))
        return MemberRow(**rows[0]) if rows else None

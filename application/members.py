"""A project's members and their roles: add, change, remove.

Each command decides on the project's own stream (the Project aggregate holds its members), so the last-owner
invariant and "only owners manage owners" hold however many requests race: the loser of a concurrent change is
re-decided on the fresh stream, and answered 409 if it keeps losing.
"""

from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from application.store import Keyledger
from domain.errors import Conflict, Forbidden, NotFound
from domain.ids import email_index_id
from domain.project import Project
from domain.scopes import MANAGE_OWNERS, Role
from domain.user import EmailIndex

ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class AddMember:
    """Add a registered user to a project with a role."""

    project_id: UUID
    email: str
    role: Role
    actor: str
    caller_permissions: frozenset[str]


@dataclass(frozen=True, slots=True)
class ChangeMemberRole:
    """Give a member another role."""

    project_id: UUID
    user_id: UUID
    role: Role
    actor: str
    caller_permissions: frozenset[str]


@dataclass(frozen=True, slots=True)
class RemoveMember:
    """Remove a member (a member may always leave, unless they are the last owner)."""

    project_id: UUID
    user_id: UUID
    actor: str
    caller_permissions: frozenset[str]
    caller_id: UUID | None


@dataclass(frozen=True, slots=True)
class Members:
    """Handlers of the membership commands."""

    app: Keyledger

    def add(self, command: AddMember) -> UUID:
        """Adds the member; returns their user id.

        Raises:
            NotFound: no registered user has this email.
            Forbidden: making someone an owner needs ``owners:manage``.
            InvariantViolated: the user is already a member (409).
        """
        index = self.app.find(email_index_id(command.email), EmailIndex, copy=False)
        if index is None:
            raise NotFound("no registered user with this email")
        if command.role == Role.OWNER:
            check_manages_owners(command.caller_permissions)
        user_id = index.user_id
        self._change(command.project_id,
                     lambda p: p.add_member(user_id=user_id, role=command.role, actor=command.actor))
        return user_id

    def change_role(self, command: ChangeMemberRole) -> None:
        """Changes the member's role; an owner's role, or a promotion to owner, needs ``owners:manage``."""

        def change(project: Project) -> None:
            current = project.role_of(command.user_id)
            if Role.OWNER in (current, command.role):
                check_manages_owners(command.caller_permissions)
            project.change_member_role(user_id=command.user_id, role=command.role, actor=command.actor)

        self._change(command.project_id, change)

    def remove(self, command: RemoveMember) -> None:
        """Removes the member: leaving needs no permission, removing someone else needs ``members:write`` (checked
        by the caller) and, for an owner, ``owners:manage``. The last owner can do neither."""

        def change(project: Project) -> None:
            leaving = command.caller_id == command.user_id
            if project.role_of(command.user_id) == Role.OWNER and not leaving:
                check_manages_owners(command.caller_permissions)
            project.remove_member(user_id=command.user_id, actor=command.actor)

        self._change(command.project_id, change)

    def _change(self, project_id: UUID, change: Callable[[Project], None]) -> None:
        """Applies ``change`` to the project's current state and saves it, re-deciding after a concurrent change."""
        for _ in range(ATTEMPTS):
            project = self.app.find(project_id, Project)
            if project is None:
                raise NotFound("project")
            change(project)
            try:
                self.app.save(project)
            except IntegrityError:
                continue
            return
        raise Conflict("the project's members changed meanwhile; try again")


def check_manages_owners(permissions: frozenset[str]) -> None:
    """Only owners (with the members:write scope) add, promote, demote or remove owners."""
    if MANAGE_OWNERS not in permissions:
        raise Forbidden("only owners manage owners")

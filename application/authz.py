"""Who is calling and what they may do in a project.

Rights are decided per request on the project's own event stream (ZITADEL's rule: commands and permission checks
decide on the stream, not on a possibly stale projection), so a membership change takes effect at once.
"""

from dataclasses import dataclass
from uuid import UUID

from application.store import Keyledger
from domain.errors import Forbidden, NotFound
from domain.ids import client_actor, user_actor
from domain.project import Project
from domain.scopes import ALL_SCOPES, Role, user_permissions


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller behind a validated access token."""

    client_id: str
    user_id: UUID | None
    project_id: UUID | None
    scopes: frozenset[str]
    token_id: UUID

    @property
    def is_user(self) -> bool:
        """Whether a person is behind the token."""
        return self.user_id is not None

    @property
    def actor(self) -> str:
        """The actor recorded on the events the caller's commands raise."""
        return user_actor(self.user_id) if self.user_id is not None else client_actor(self.client_id)


@dataclass(frozen=True, slots=True)
class Authorization:
    """The result of an authorization check: the project and the caller's role in it (None for clients)."""

    project: Project
    role: Role | None
    permissions: frozenset[str]
    version: int  # the project's version the permissions were read at (``project``, cached, may move on after)


def authorize(app: Keyledger, principal: Principal, project_id: UUID, permission: str) -> Authorization:
    """Loads the project and checks ``permission``.

    The returned project is the repository's cached instance, fast-forwarded to the stream's head: read it, never
    change it (a command loads its own copy). Copying it would cost more than the check itself for a project of
    1,000 members.

    Raises:
        NotFound: the project does not exist or the caller may not see it (never 403, so existence does not leak).
        Forbidden: the caller sees the project but lacks ``permission``.
    """
    project = app.find(project_id, Project, copy=False)
    if project is None:
        raise NotFound("project")
    return authorize_on(project, principal, permission)


def authorize_on(project: Project, principal: Principal, permission: str) -> Authorization:
    """Checks ``permission`` on a project already loaded.

    A command that decides on this same version of the project's stream and saves it with optimistic concurrency
    acts only if the caller's right still held when it was saved: a concurrent change of their role fails the save.

    Raises:
        NotFound: the caller may not see the project (never 403, so existence does not leak).
        Forbidden: the caller sees the project but lacks ``permission``.
    """
    version = project.version  # first: a cached project moved on meanwhile makes the guard stricter, never looser
    role, permissions = access(project, principal)
    if permission not in permissions:
        raise Forbidden(f"requires the {permission!r} permission")
    return Authorization(project=project, role=role, permissions=permissions, version=version)


def access(project: Project, principal: Principal) -> tuple[Role | None, frozenset[str]]:
    """Returns the caller's role in ``project`` (None for a client) and their permissions there.

    Raises:
        NotFound: the caller may not see the project: a person who is not a member, a client of another project.
    """
    if principal.is_user:
        assert principal.user_id is not None
        role = project.role_of(principal.user_id)
        if role is None:
            raise NotFound("project")
        return role, user_permissions(role, tuple(principal.scopes))
    if principal.project_id != project.id:
        raise NotFound("project")
    # Only the vocabulary's scopes: role-only permissions (owners:manage, project:delete) never reach a client.
    return None, principal.scopes & ALL_SCOPES

"""Who is calling and what they may do in a project.

Rights are decided per request on the project's own event stream (ZITADEL's rule: commands and permission checks
decide on the stream, not on a possibly stale projection), so a membership change takes effect at once.
"""

from dataclasses import dataclass
from uuid import UUID

from application.store import Keyledger
from domain.errors import Forbidden, NotFound
from domain.project import Project
from domain.scopes import Role, user_permissions


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


@dataclass(frozen=True, slots=True)
class Authorization:
    """The result of an authorization check: the project and the caller's role in it (None for clients)."""

    project: Project
    role: Role | None
    permissions: frozenset[str]


def authorize(app: Keyledger, principal: Principal, project_id: UUID, permission: str) -> Authorization:
    """Loads the project and checks ``permission``.

    Raises:
        NotFound: the project does not exist or the caller may not see it (never 403, so existence does not leak).
        Forbidden: the caller sees the project but lacks ``permission``.
    """
    project = app.find(project_id, Project)
    if project is None:
        raise NotFound("project")
    if principal.is_user:
        assert principal.user_id is not None
        role = project.role_of(principal.user_id)
        if role is None:
            raise NotFound("project")
        permissions = user_permissions(role, tuple(principal.scopes))
    else:
        if principal.project_id != project_id:
            raise NotFound("project")
        role, permissions = None, principal.scopes
    if permission not in permissions:
        raise Forbidden(f"requires the {permission!r} permission")
    return Authorization(project=project, role=role, permissions=permissions)

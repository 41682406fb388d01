"""The management API's member routes: who shares a project, with which role.

Commands decide on the project's own stream; the listing reads the members model (brought up to the store's head
first, confined to the project by row-level security) and the members' emails from their own streams.
"""

from typing import Annotated
from uuid import UUID

from litestar import Response, delete, get, patch, post
from litestar.datastructures import State
from litestar.params import Parameter

from application.authz import Principal, authorize
from application.members import AddMember, ChangeMemberRole, RemoveMember
from domain.errors import InvalidArgument, NotFound
from domain.project import Project
from domain.scopes import Role
from domain.user import User
from infrastructure.http.auth import AUTH
from infrastructure.http.errors import NO_STORE
from infrastructure.http.paging import DEFAULT_PAGE, MAX_PAGE, decode_cursor, encode_cursor
from infrastructure.http.schemas import MemberBody, MemberOut, MemberPage, RoleBody
from infrastructure.http.tokens import actor


def member_cursor(cursor: str) -> tuple[object, UUID]:
    """The position a members cursor names."""
    at, key = decode_cursor(cursor)
    try:
        return at, UUID(key)
    except ValueError:
        raise InvalidArgument("the cursor is invalid") from None


def member_out(state: State, project_id: UUID, user_id: UUID) -> MemberOut:
    """A member as it stands after a command (read from the streams, so it is current)."""
    container = state.container
    project = container.app.load(project_id, Project, copy=False)
    user = container.app.find(user_id, User, copy=False)
    role = project.role_of(user_id)
    if user is None or role is None:
        raise NotFound("member")
    since = container.members.since(project_id, user_id)
    return MemberOut(user_id=str(user_id), email=user.email, role=str(role),
                     since=(since or project.modified_on).isoformat())


@get("/v1/projects/{project_id:uuid}/members", sync_to_thread=True, dependencies=AUTH, tags=["members"])
def list_members(project_id: UUID, caller: Principal, state: State, *,
                 cursor: Annotated[str | None, Parameter(max_length=200)] = None,
                 limit: Annotated[int, Parameter(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE) -> MemberPage:
    """The project's members, longest-standing first, with their emails."""
    container = state.container
    authorize(container.app, caller, project_id, "members:read")
    view = container.members
    view.wait_for(container.app.recorder.max_notification_id() or 0)
    rows = view.page(project_id, limit=limit + 1, after=member_cursor(cursor) if cursor else None)  # type: ignore[arg-type]
    more, rows = len(rows) > limit, rows[:limit]
    users = container.app.find_many([r.user_id for r in rows], User)
    items = [MemberOut(user_id=str(r.user_id), email=users[r.user_id].email, role=r.role, since=r.since.isoformat())
             for r in rows if r.user_id in users]
    return MemberPage(items=items, next_cursor=encode_cursor(rows[-1].since, str(rows[-1].user_id)) if more else None)


@post("/v1/projects/{project_id:uuid}/members", sync_to_thread=True, status_code=201, dependencies=AUTH,
      tags=["members"])
def add_member(project_id: UUID, data: MemberBody, caller: Principal, state: State) -> Response[MemberOut]:
    """Adds a registered user with a role; only owners add owners. 404 for an unknown email, 409 for a member."""
    container = state.container
    granted = authorize(container.app, caller, project_id, "members:write")
    user_id = container.members_admin.add(AddMember(project_id=project_id, email=data.email, role=Role(data.role),
                                                    actor=actor(caller), caller_permissions=granted.permissions))
    return Response(member_out(state, project_id, user_id), status_code=201, headers=NO_STORE)


@patch("/v1/projects/{project_id:uuid}/members/{user_id:uuid}", sync_to_thread=True, dependencies=AUTH,
       tags=["members"])
def change_member_role(project_id: UUID, user_id: UUID, data: RoleBody, caller: Principal,
                       state: State) -> MemberOut:
    """Changes a member's role; an owner's role and promotions to owner need an owner. One owner always stays."""
    container = state.container
    granted = authorize(container.app, caller, project_id, "members:write")
    container.members_admin.change_role(ChangeMemberRole(project_id=project_id, user_id=user_id,
                                                         role=Role(data.role), actor=actor(caller),
                                                         caller_permissions=granted.permissions))
    return member_out(state, project_id, user_id)


@delete("/v1/projects/{project_id:uuid}/members/{user_id:uuid}", sync_to_thread=True, status_code=204,
        dependencies=AUTH, tags=["members"])
def remove_member(project_id: UUID, user_id: UUID, caller: Principal, state: State) -> None:
    """Removes a member. Any member may leave; removing someone else needs ``members:write`` (and an owner to
    remove an owner). The last owner can neither leave nor be removed (409)."""
    container = state.container
    leaving = caller.user_id == user_id
    granted = authorize(container.app, caller, project_id, "project:read" if leaving else "members:write")
    container.members_admin.remove(RemoveMember(project_id=project_id, user_id=user_id, actor=actor(caller),
                                                caller_permissions=granted.permissions, caller_id=caller.user_id))

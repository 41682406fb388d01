"""The management API's member routes: who shares a project, with which role.

Commands decide on the project's own stream (the caller's rights included, see ``application.members``). Listings,
and the member a command answers with, come from the members read model once it shows every change acknowledged
before (read-your-writes), confined to the project by row-level security.
"""

from typing import Annotated
from uuid import UUID

from litestar import Response, delete, get, patch, post
from litestar.datastructures import State
from litestar.exceptions import NotFoundException
from litestar.params import Parameter

from application.authz import Principal, authorize
from application.members import AddMember, ChangeMemberRole, MemberChanged, RemoveMember, UnknownUser
from domain.errors import NotFound
from domain.scopes import Role
from infrastructure.http.auth import AUTH
from infrastructure.http.errors import NO_STORE
from infrastructure.http.paging import DEFAULT_PAGE, MAX_PAGE, decode_uuid_cursor, encode_cursor
from infrastructure.http.schemas import MemberBody, MemberOut, MemberPage, RoleBody
from projections.members import MemberRow

MEMBERS = "/v1/projects/{project_id:uuid}/members"
MEMBER = MEMBERS + "/{user_id:uuid}"


def member_out(row: MemberRow) -> MemberOut:
    """A member as the API shows it."""
    return MemberOut(user_id=str(row.user_id), email=row.email or "", role=row.role, since=row.since.isoformat())


def changed_member(state: State, project_id: UUID, done: MemberChanged) -> MemberOut:
    """The member a command changed, once the members model shows the change (and whatever came before it)."""
    container = state.container
    view = container.members
    view.wait_for(done.position or container.app.recorder.max_notification_id() or 0)
    row = view.member(project_id, done.user_id)
    if row is None:  # removed by a concurrent command since: the truth now is that there is no such member
        raise NotFound("member")
    return member_out(row)


@get(MEMBERS, sync_to_thread=True, dependencies=AUTH, tags=["members"])
def list_members(project_id: UUID, caller: Principal, state: State, *,
                 cursor: Annotated[str | None, Parameter(max_length=200)] = None,
                 limit: Annotated[int, Parameter(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE) -> MemberPage:
    """The project's members in the order they joined, with their emails.

    The page reflects every membership change acknowledged before the request: the members model is brought up to
    the store's head first.
    """
    container = state.container
    authorize(container.app, caller, project_id, "members:read")
    view = container.members
    view.wait_for(container.app.recorder.max_notification_id() or 0)
    listing = ("members", project_id)
    rows = view.page(project_id, limit=limit + 1,
                     after=decode_uuid_cursor(cursor, listing=listing) if cursor else None)
    more, rows = len(rows) > limit, rows[:limit]
    return MemberPage(items=[member_out(r) for r in rows], next_cursor=encode_cursor(
        rows[-1].since, str(rows[-1].user_id), listing=listing) if more else None)


@post(MEMBERS, sync_to_thread=True, status_code=201, dependencies=AUTH, tags=["members"])
def add_member(project_id: UUID, data: MemberBody, caller: Principal, state: State) -> Response[MemberOut]:
    """Adds a registered user, named by email, with a role (``members:write``; only owners add owners).

    An email no enabled user registered answers 404 "no registered user with this email"; only a caller allowed to
    add that member gets this far, so the answer tells nobody else whether an email is registered, and as anyone can
    own a project, a caller may name only so many such emails (429 past ``KEYLEDGER_MAX_UNKNOWN_MEMBER_EMAILS``,
    ``Members.looked_up``). A user who is already a member answers 409.
    """
    command = AddMember(project_id=project_id, email=data.email, role=Role(data.role), caller=caller)
    try:
        done = state.container.members_admin.add(command)
    except UnknownUser:
        raise NotFoundException("no registered user with this email") from None
    return Response(changed_member(state, project_id, done), status_code=201, headers=NO_STORE)


# Returns the struct, not a Response: Litestar 2.25 answers a sync handler returning a Response with a 500 when a sync
# handler of another method on the same path (the DELETE below) is registered after it.
@patch(MEMBER, sync_to_thread=True, dependencies=AUTH, tags=["members"])
def change_member_role(project_id: UUID, user_id: UUID, data: RoleBody, caller: Principal,
                       state: State) -> MemberOut:
    """Gives a member another role (``members:write``).

    Promoting to owner and changing an owner's role (themself included) need ``owners:manage``: only owners manage
    owners. The last owner cannot be demoted (409). A user who is not a member answers 404.
    """
    command = ChangeMemberRole(project_id=project_id, user_id=user_id, role=Role(data.role), caller=caller)
    done = state.container.members_admin.change_role(command)
    return changed_member(state, project_id, done)


@delete(MEMBER, sync_to_thread=True, status_code=204, dependencies=AUTH, tags=["members"])
def remove_member(project_id: UUID, user_id: UUID, caller: Principal, state: State) -> None:
    """Removes a member; 204.

    Removing someone else needs ``members:write``, and ``owners:manage`` to remove an owner. A member may always
    remove themself (leave), whatever their role, with a token carrying the ``members:write`` scope: no role
    permission is needed to leave. The last owner can neither leave nor be removed (409): a project always keeps an
    owner. The removed member's tokens lose the project at once (404).
    """
    state.container.members_admin.remove(RemoveMember(project_id=project_id, user_id=user_id, caller=caller))

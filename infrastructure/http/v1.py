"""The management API under ``/v1`` (bearer tokens, RFC 9457 problem details)."""

from typing import Any
from uuid import UUID

from litestar import Request, Response, get, post
from litestar.datastructures import State

from application.accounts import NewClient, SignUp
from application.authz import Principal
from application.passwords import ChangePassword
from domain.errors import Forbidden, NotFound
from domain.project import Project
from domain.user import User
from infrastructure.http.auth import AUTH, authorized
from infrastructure.http.clients import client_out
from infrastructure.http.errors import NO_STORE
from infrastructure.http.oauth import source_address
from infrastructure.http.schemas import (
    Membership,
    MeOut,
    PasswordChangeBody,
    ProjectBody,
    ProjectOut,
    RevokedOut,
    SignupBody,
    SignupOut,
    UserOut,
)


def project_out(project: Project) -> ProjectOut:
    """A project's representation."""
    return ProjectOut(id=str(project.id), name=project.name)


@post("/v1/signup", sync_to_thread=True, status_code=201, tags=["accounts"], security=[])
def signup(data: SignupBody, state: State, request: Request[Any, Any, Any]) -> Response[SignupOut]:
    """Creates a user, their first project (owned by them) and its first client; the secret is shown once."""
    name = data.project_name or data.email.split("@", 1)[0]
    done = state.container.accounts.sign_up(SignUp(email=data.email, password=data.password, project_name=name,
                                                   source=source_address(request)))
    new: NewClient = done.client
    body = SignupOut(user=UserOut(id=str(done.user.id), email=done.user.email), project=project_out(done.project),
                     client=client_out(new.client, state.container.settings.lifetimes, new.client_secret))
    return Response(body, status_code=201, headers=NO_STORE)


@post("/v1/me/password", sync_to_thread=True, status_code=200, dependencies=AUTH, tags=["accounts"])
def change_password(data: PasswordChangeBody, caller: Principal, state: State,
                    request: Request[Any, Any, Any]) -> Response[RevokedOut]:
    """Replaces the caller's password, given the current one; every session of theirs ends, this one included
    (``application.passwords``): ``{"revoked": n}``, then log in again with the new password."""
    if caller.user_id is None:
        raise Forbidden("requires a user's token, not a client's")
    revoked = state.container.passwords.change(ChangePassword(
        user_id=caller.user_id, current_password=data.current_password, new_password=data.new_password,
        source=source_address(request), user_agent=request.headers.get("user-agent")))
    return Response(RevokedOut(revoked=revoked), headers=NO_STORE)


@get("/v1/me", sync_to_thread=True, dependencies=AUTH, tags=["accounts"])
def me(caller: Principal, state: State) -> MeOut:
    """The calling person and their memberships (read-your-writes: waits for the members model to catch up)."""
    if caller.user_id is None:
        raise Forbidden("requires a user's token, not a client's")
    container = state.container
    user = container.app.find(caller.user_id, User)
    if user is None:
        raise NotFound("user")
    members = container.members
    members.wait_for(container.app.recorder.max_notification_id() or 0)
    return MeOut(id=str(user.id), email=user.email,
                 memberships=[Membership(**m) for m in members.memberships(user.id)])


@post("/v1/projects", sync_to_thread=True, status_code=201, dependencies=AUTH, tags=["projects"])
def create_project(data: ProjectBody, caller: Principal, state: State) -> ProjectOut:
    """Creates a project; the calling person becomes its owner."""
    if caller.user_id is None:
        raise Forbidden("only people create projects")
    return project_out(state.container.accounts.create_project(name=data.name, owner_id=caller.user_id))


@get("/v1/projects/{project_id:uuid}", dependencies=AUTH, tags=["projects"])
async def get_project(project_id: UUID, caller: Principal, request: Request[Any, Any, Any],
                      state: State) -> dict[str, Any]:
    """A project the caller may read (404 if it may not see it)."""
    granted = await authorized(request, state, caller, project_id, "project:read")
    out = {"id": str(granted.project.id), "name": granted.project.name,
           "created_at": granted.project.created_on.isoformat()}
    if granted.role is not None:
        out["role"] = str(granted.role)
    return out

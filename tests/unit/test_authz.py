"""authorize(): who may do what in a project, decided on the project's stream (404 before 403)."""

from uuid import UUID, uuid4

import pytest

from application.accounts import SignedUp
from application.authz import Principal, authorize
from domain.errors import Forbidden, NotFound
from domain.project import Project
from domain.scopes import ALL_SCOPES, DELETE_PROJECT, MANAGE_OWNERS, Role
from tests.unit.conftest import World


def user(user_id: UUID, scopes: frozenset[str] = ALL_SCOPES) -> Principal:
    return Principal(client_id="dashboard", user_id=user_id, project_id=None, scopes=scopes, token_id=uuid4())


def client(signed: SignedUp, scopes: frozenset[str] | None = None) -> Principal:
    owned = signed.client.client
    return Principal(client_id=owned.client_id, user_id=None, project_id=owned.project_id,
                     scopes=owned.scopes if scopes is None else scopes, token_id=uuid4())


@pytest.fixture
def acme(world: World) -> SignedUp:
    return world.sign_up("owner@acme.test")


@pytest.fixture
def globex(world: World) -> SignedUp:
    return world.sign_up("owner@globex.test")


def add_member(world: World, project_id: UUID, role: Role) -> UUID:
    member = world.sign_up(f"{role}-{uuid4().hex[:6]}@example.test").user.id
    project = world.app.load(project_id, Project)
    project.add_member(user_id=member, role=role, actor="user:owner")
    world.app.save(project)
    return member


def test_the_owner_has_every_permission(world: World, acme: SignedUp) -> None:
    granted = authorize(world.app, user(acme.user.id), acme.project.id, "members:write")
    assert granted.role is Role.OWNER
    assert granted.project.id == acme.project.id
    assert {MANAGE_OWNERS, DELETE_PROJECT} | ALL_SCOPES == granted.permissions


def test_an_unknown_project_is_not_found(world: World, acme: SignedUp) -> None:
    with pytest.raises(NotFound):
        authorize(world.app, user(acme.user.id), uuid4(), "project:read")
    with pytest.raises(NotFound):
        authorize(world.app, client(acme), uuid4(), "project:read")


def test_a_non_member_is_not_found_even_for_a_permission_they_would_lack(world: World, acme: SignedUp,
                                                                         globex: SignedUp) -> None:
    for permission in ("project:read", "project:delete"):
        with pytest.raises(NotFound):
            authorize(world.app, user(globex.user.id), acme.project.id, permission)


def test_an_id_of_another_aggregate_is_not_a_project(world: World, acme: SignedUp) -> None:
    with pytest.raises(NotFound):
        authorize(world.app, user(acme.user.id), acme.user.id, "project:read")


@pytest.mark.parametrize(("role", "permission"), [(Role.AUDITOR, "clients:write"), (Role.DEVELOPER, "audit:read"),
                                                  (Role.ADMIN, MANAGE_OWNERS), (Role.DEVELOPER, "members:write")])
def test_a_member_lacking_the_permission_is_forbidden(role: Role, permission: str, world: World,
                                                      acme: SignedUp) -> None:
    member = add_member(world, acme.project.id, role)
    assert authorize(world.app, user(member), acme.project.id, "project:read").role is role
    with pytest.raises(Forbidden):
        authorize(world.app, user(member), acme.project.id, permission)


def test_a_user_token_is_limited_by_its_scopes(world: World, acme: SignedUp) -> None:
    narrow = user(acme.user.id, frozenset({"project:read"}))
    assert authorize(world.app, narrow, acme.project.id, "project:read").permissions == {"project:read"}
    with pytest.raises(Forbidden):
        authorize(world.app, narrow, acme.project.id, "members:read")
    with pytest.raises(Forbidden):
        authorize(world.app, user(acme.user.id, frozenset({"members:read"})), acme.project.id, MANAGE_OWNERS)


def test_membership_changes_take_effect_at_once(world: World, acme: SignedUp) -> None:
    member = add_member(world, acme.project.id, Role.ADMIN)
    assert authorize(world.app, user(member), acme.project.id, "clients:write").role is Role.ADMIN
    project = world.app.load(acme.project.id, Project)
    project.change_member_role(user_id=member, role=Role.AUDITOR, actor="user:owner")
    world.app.save(project)
    with pytest.raises(Forbidden):
        authorize(world.app, user(member), acme.project.id, "clients:write")
    project = world.app.load(acme.project.id, Project)
    project.remove_member(user_id=member, actor="user:owner")
    world.app.save(project)
    with pytest.raises(NotFound):
        authorize(world.app, user(member), acme.project.id, "project:read")


def test_a_client_token_works_in_its_own_project_within_its_scopes(world: World, acme: SignedUp) -> None:
    granted = authorize(world.app, client(acme), acme.project.id, "tokens:read")
    assert granted.role is None
    assert granted.permissions == acme.client.client.scopes
    with pytest.raises(Forbidden):
        authorize(world.app, client(acme), acme.project.id, "clients:write")


def test_a_client_token_of_another_project_is_not_found(world: World, acme: SignedUp, globex: SignedUp) -> None:
    intruder = client(globex, ALL_SCOPES)
    for permission in ("project:read", "audit:read", "clients:write"):
        with pytest.raises(NotFound):
            authorize(world.app, intruder, acme.project.id, permission)
    platform_wide = Principal(client_id="dashboard", user_id=None, project_id=None, scopes=ALL_SCOPES,
                              token_id=uuid4())
    with pytest.raises(NotFound):
        authorize(world.app, platform_wide, acme.project.id, "project:read")

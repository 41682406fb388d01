"""Project aggregate: members and roles, and the at-least-one-owner invariant."""

from uuid import UUID, uuid4

import pytest

from domain.errors import InvariantViolated, NotFound
from domain.ids import user_actor
from domain.project import Project
from domain.scopes import Role
from tests.unit.conftest import in_memory_app


def new_project() -> tuple[Project, UUID]:
    owner = uuid4()
    return Project(project_id=uuid4(), name="Acme", owner_id=owner, actor=user_actor(owner)), owner


def event_names(project: Project) -> list[str]:
    return [type(e).__name__ for e in project.collect_events()]


def test_creator_is_the_owner_and_the_id_is_the_commands() -> None:
    project_id, owner = uuid4(), uuid4()
    project = Project(project_id=project_id, name="Acme", owner_id=owner, actor=user_actor(owner))
    assert project.id == project_id
    assert project.role_of(owner) is Role.OWNER
    assert project.role_of(uuid4()) is None
    assert event_names(project) == ["ProjectCreated"]


def test_add_member_raises_member_added() -> None:
    project, owner = new_project()
    project.collect_events()
    dev = uuid4()
    project.add_member(user_id=dev, role=Role.DEVELOPER, actor=user_actor(owner))
    assert project.role_of(dev) is Role.DEVELOPER
    assert event_names(project) == ["MemberAdded"]


def test_add_member_accepts_the_role_as_a_string() -> None:
    project, owner = new_project()
    dev = uuid4()
    project.add_member(user_id=dev, role="auditor", actor=user_actor(owner))  # type: ignore[arg-type]
    assert project.role_of(dev) is Role.AUDITOR


def test_adding_an_existing_member_is_refused() -> None:
    project, owner = new_project()
    project.collect_events()
    with pytest.raises(InvariantViolated):
        project.add_member(user_id=owner, role=Role.ADMIN, actor=user_actor(owner))
    assert project.role_of(owner) is Role.OWNER
    assert event_names(project) == []


def test_change_member_role_raises_member_role_changed() -> None:
    project, owner = new_project()
    dev = uuid4()
    project.add_member(user_id=dev, role=Role.DEVELOPER, actor=user_actor(owner))
    project.collect_events()
    project.change_member_role(user_id=dev, role=Role.ADMIN, actor=user_actor(owner))
    assert project.role_of(dev) is Role.ADMIN
    assert event_names(project) == ["MemberRoleChanged"]


def test_remove_member_raises_member_removed() -> None:
    project, owner = new_project()
    dev = uuid4()
    project.add_member(user_id=dev, role=Role.DEVELOPER, actor=user_actor(owner))
    project.collect_events()
    project.remove_member(user_id=dev, actor=user_actor(owner))
    assert project.role_of(dev) is None
    assert event_names(project) == ["MemberRemoved"]


def test_the_last_owner_cannot_be_demoted() -> None:
    project, owner = new_project()
    project.add_member(user_id=uuid4(), role=Role.ADMIN, actor=user_actor(owner))
    project.collect_events()
    with pytest.raises(InvariantViolated):
        project.change_member_role(user_id=owner, role=Role.ADMIN, actor=user_actor(owner))
    assert project.role_of(owner) is Role.OWNER
    assert event_names(project) == []


def test_the_last_owner_cannot_be_removed() -> None:
    project, owner = new_project()
    project.collect_events()
    with pytest.raises(InvariantViolated):
        project.remove_member(user_id=owner, actor=user_actor(owner))
    assert project.role_of(owner) is Role.OWNER
    assert event_names(project) == []


def test_an_owner_can_leave_or_be_demoted_when_another_owner_stays() -> None:
    project, first = new_project()
    second, third = uuid4(), uuid4()
    project.add_member(user_id=second, role=Role.OWNER, actor=user_actor(first))
    project.add_member(user_id=third, role=Role.OWNER, actor=user_actor(first))
    project.change_member_role(user_id=first, role=Role.DEVELOPER, actor=user_actor(second))
    project.remove_member(user_id=second, actor=user_actor(third))
    assert project.members == {first: Role.DEVELOPER, third: Role.OWNER}
    with pytest.raises(InvariantViolated):
        project.remove_member(user_id=third, actor=user_actor(third))


def test_an_owner_keeping_the_owner_role_is_not_a_demotion() -> None:
    project, owner = new_project()
    project.change_member_role(user_id=owner, role=Role.OWNER, actor=user_actor(owner))
    assert project.role_of(owner) is Role.OWNER


@pytest.mark.parametrize("command", ["change", "remove"])
def test_a_non_member_is_not_found(command: str) -> None:
    project, owner = new_project()
    stranger = uuid4()
    with pytest.raises(NotFound):
        if command == "change":
            project.change_member_role(user_id=stranger, role=Role.ADMIN, actor=user_actor(owner))
        else:
            project.remove_member(user_id=stranger, actor=user_actor(owner))
    assert project.role_of(stranger) is None


def test_every_event_carries_its_actor() -> None:
    project, owner = new_project()
    dev = uuid4()
    project.add_member(user_id=dev, role=Role.DEVELOPER, actor="user:someone")
    project.change_member_role(user_id=dev, role=Role.AUDITOR, actor="client:klc_x")
    project.remove_member(user_id=dev, actor="system")
    actors = [(type(e).__name__, e.actor) for e in project.collect_events()]  # type: ignore[attr-defined]
    assert actors == [("ProjectCreated", user_actor(owner)), ("MemberAdded", "user:someone"),
                      ("MemberRoleChanged", "client:klc_x"), ("MemberRemoved", "system")]


def test_members_survive_a_round_trip_through_the_event_store() -> None:
    app = in_memory_app()
    project, owner = new_project()
    dev, auditor = uuid4(), uuid4()
    project.add_member(user_id=dev, role=Role.DEVELOPER, actor=user_actor(owner))
    project.add_member(user_id=auditor, role=Role.AUDITOR, actor=user_actor(owner))
    project.change_member_role(user_id=dev, role=Role.ADMIN, actor=user_actor(owner))
    project.remove_member(user_id=auditor, actor=user_actor(owner))
    app.save(project)
    app.repository.cache = None  # replay from the stored events, not the cached instance
    loaded = app.load(project.id, Project)
    assert loaded.members == {owner: Role.OWNER, dev: Role.ADMIN}
    assert all(isinstance(role, Role) for role in loaded.members.values())
    assert loaded.version == 5

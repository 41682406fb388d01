"""Membership commands on the in-memory store: rights decided on the project's stream, only owners manage owners,
a project keeps an owner, a member may leave, concurrent changes are decided again."""

from collections.abc import Callable
from typing import Any
from uuid import UUID, uuid4

import pytest

from application.accounts import SignedUp
from application.authz import Principal
from application.members import AddMember, ChangeMemberRole, MemberChanged, Members, RemoveMember, UnknownUser
from application.oauth.errors import TooManyAttempts
from application.oauth.limits import AttemptLimits
from domain.errors import Conflict, Forbidden, InvariantViolated, NotFound
from domain.ids import user_actor
from domain.project import Project
from domain.scopes import ALL_SCOPES, ROLE_PERMISSIONS, Role, needed_to_change_member, user_permissions
from domain.user import User
from tests.racer import Racer
from tests.unit.conftest import MemoryLimiter, World, person


def key(signed: SignedUp, scopes: frozenset[str]) -> Principal:
    client = signed.client.client
    return Principal(client_id=client.client_id, user_id=None, project_id=client.project_id, scopes=scopes,
                     token_id=uuid4())


@pytest.fixture
def members(world: World) -> Members:
    return Members(app=world.app)


@pytest.fixture
def acme(world: World) -> SignedUp:
    return world.sign_up("owner@acme.test")


class Team:
    """Acme's project, its owner, and helpers to register people and give them roles directly on the stream."""

    def __init__(self, world: World, acme: SignedUp) -> None:
        self.world, self.project_id, self.owner_id = world, acme.project.id, acme.user.id
        self.owner = person(acme.user.id)

    def register(self) -> User:
        return self.world.sign_up(f"p-{uuid4().hex[:8]}@example.test", project_name="Own").user

    def member(self, role: Role) -> UUID:
        user_id = self.register().id
        project = self.project()
        project.add_member(user_id=user_id, role=role, actor=user_actor(self.owner_id))
        self.world.app.save(project)
        return user_id

    def project(self) -> Project:
        return self.world.app.load(self.project_id, Project)


@pytest.fixture
def team(world: World, acme: SignedUp) -> Team:
    return Team(world, acme)


def test_an_owner_adds_a_registered_user_by_email(members: Members, team: Team) -> None:
    newcomer = team.register()
    done = members.add(AddMember(project_id=team.project_id, email=newcomer.email.upper(), role=Role.DEVELOPER,
                                 caller=team.owner))
    assert done == MemberChanged(user_id=newcomer.id, role=Role.DEVELOPER, position=team.world.position())
    assert team.project().role_of(newcomer.id) is Role.DEVELOPER
    event = list(team.world.app.events.get(team.project_id))[-1]
    assert type(event).__name__ == "MemberAdded"
    assert event.actor == user_actor(team.owner_id)  # type: ignore[attr-defined]


def test_an_unknown_or_disabled_email_is_not_found(members: Members, team: Team) -> None:
    disabled = team.register()
    user = team.world.app.load(disabled.id, User)
    user.disable(actor="system")
    team.world.app.save(user)
    for email in ("nobody@acme.test", disabled.email):
        with pytest.raises(UnknownUser):
            members.add(AddMember(project_id=team.project_id, email=email, role=Role.ADMIN, caller=team.owner))
    assert team.project().members == {team.owner_id: Role.OWNER}


def test_unknown_emails_a_caller_names_are_limited_and_known_ones_neither_count_nor_clear(
        world: World, team: Team) -> None:
    """Anyone can sign up and own a project: without a limit any account could test which e-mails are registered.
    Each unknown e-mail is counted against the caller before the index is read; a registered one is uncounted and
    clears nothing; past the limit the caller's additions are refused (429), another caller's are not."""
    limited = Members(app=world.app, limiter=MemoryLimiter(world.clock, AttemptLimits(per_lookup=2)))

    def add(email: str, caller: Principal | None = None) -> MemberChanged:
        return limited.add(AddMember(project_id=team.project_id, email=email, role=Role.DEVELOPER,
                                     caller=caller or team.owner))

    with pytest.raises(UnknownUser):
        add("nobody-1@example.test")
    add(team.register().email)  # registered: not counted, and the count so far stays
    with pytest.raises(UnknownUser):
        add("nobody-2@example.test")
    with pytest.raises(TooManyAttempts):  # locked now, whatever the e-mail
        add(team.register().email)
    admin = person(team.member(Role.ADMIN))
    with pytest.raises(UnknownUser):  # another caller counts on its own
        add("nobody-3@example.test", admin)


def test_adding_a_member_again_is_refused(members: Members, team: Team) -> None:
    with pytest.raises(InvariantViolated):
        members.add(AddMember(project_id=team.project_id, email="owner@acme.test", role=Role.ADMIN,
                              caller=team.owner))


def test_who_may_not_add_learns_nothing_about_the_email(members: Members, team: Team, world: World) -> None:
    developer, stranger = person(team.member(Role.DEVELOPER)), person(world.sign_up("x@other.test").user.id)
    admin = person(team.member(Role.ADMIN))
    for caller, role, refused in ((developer, Role.AUDITOR, Forbidden), (stranger, Role.AUDITOR, NotFound),
                                  (admin, Role.OWNER, Forbidden)):
        for email in ("nobody@acme.test", "x@other.test"):
            with pytest.raises(refused) as raised:
                members.add(AddMember(project_id=team.project_id, email=email, role=role, caller=caller))
            assert not isinstance(raised.value, UnknownUser)


def test_an_unknown_project_is_not_found(members: Members, team: Team) -> None:
    with pytest.raises(NotFound):
        members.add(AddMember(project_id=uuid4(), email="owner@acme.test", role=Role.ADMIN, caller=team.owner))
    with pytest.raises(NotFound):
        members.remove(RemoveMember(project_id=uuid4(), user_id=team.owner_id, caller=team.owner))


def test_a_token_without_the_members_write_scope_changes_nothing(members: Members, team: Team) -> None:
    narrow = person(team.owner_id, frozenset({"project:read", "members:read"}))
    target = team.member(Role.DEVELOPER)
    with pytest.raises(Forbidden):
        members.change_role(ChangeMemberRole(project_id=team.project_id, user_id=target, role=Role.ADMIN,
                                             caller=narrow))
    with pytest.raises(Forbidden):
        members.remove(RemoveMember(project_id=team.project_id, user_id=target, caller=narrow))
    assert team.project().role_of(target) is Role.DEVELOPER


# Every membership change, as (role before, role after); None is "not a member".
CHANGES: list[tuple[Role | None, Role | None]] = [
    (None, role) for role in Role] + [(a, b) for a in Role for b in Role if a != b] + [(role, None) for role in Role]


def run_change(members: Members, team: Team, caller: Principal, before: Role | None, after: Role | None) -> None:
    if before is None:
        assert after is not None
        email = team.register().email
        members.add(AddMember(project_id=team.project_id, email=email, role=after, caller=caller))
        return
    target = team.member(before)
    if after is None:
        members.remove(RemoveMember(project_id=team.project_id, user_id=target, caller=caller))
    else:
        members.change_role(ChangeMemberRole(project_id=team.project_id, user_id=target, role=after, caller=caller))


@pytest.mark.parametrize("role", list(ROLE_PERMISSIONS))
@pytest.mark.parametrize(("before", "after"), CHANGES)
def test_each_role_against_each_membership_change(members: Members, team: Team, role: Role, before: Role | None,
                                                  after: Role | None) -> None:
    caller = person(team.member(role))
    allowed = needed_to_change_member(before, after) <= user_permissions(role, tuple(ALL_SCOPES))
    if allowed:
        run_change(members, team, caller, before, after)
    else:
        with pytest.raises(Forbidden):
            run_change(members, team, caller, before, after)


@pytest.mark.parametrize(("before", "after"), CHANGES)
def test_a_client_manages_members_but_never_owners(members: Members, team: Team, acme: SignedUp,
                                                   before: Role | None, after: Role | None) -> None:
    # A scope string naming a role-only permission grants a client nothing.
    caller = key(acme, frozenset({"members:write", "owners:manage"}))
    if Role.OWNER in (before, after):
        with pytest.raises(Forbidden):
            run_change(members, team, caller, before, after)
        return
    run_change(members, team, caller, before, after)
    event = list(team.world.app.events.get(team.project_id))[-1]
    assert event.actor == f"client:{acme.client.client.client_id}"  # type: ignore[attr-defined]


def test_another_projects_client_sees_nothing(members: Members, team: Team, world: World) -> None:
    other = world.sign_up("owner@other.test", project_name="Other")
    with pytest.raises(NotFound):
        members.add(AddMember(project_id=team.project_id, email="owner@other.test", role=Role.DEVELOPER,
                              caller=key(other, ALL_SCOPES)))


def test_the_last_owner_can_neither_leave_nor_be_demoted(members: Members, team: Team) -> None:
    with pytest.raises(InvariantViolated):
        members.change_role(ChangeMemberRole(project_id=team.project_id, user_id=team.owner_id, role=Role.ADMIN,
                                             caller=team.owner))
    with pytest.raises(InvariantViolated):
        members.remove(RemoveMember(project_id=team.project_id, user_id=team.owner_id, caller=team.owner))
    second = team.member(Role.OWNER)
    members.remove(RemoveMember(project_id=team.project_id, user_id=team.owner_id, caller=team.owner))
    assert team.project().members == {second: Role.OWNER}


@pytest.mark.parametrize("role", list(Role))
def test_any_member_may_leave_with_a_token_scoped_for_it(members: Members, team: Team, role: Role) -> None:
    leaver = team.member(role)
    with pytest.raises(Forbidden):
        members.remove(RemoveMember(project_id=team.project_id, user_id=leaver,
                                    caller=person(leaver, frozenset({"project:read", "members:read"}))))
    done = members.remove(RemoveMember(project_id=team.project_id, user_id=leaver, caller=person(leaver)))
    assert done.role is None
    assert team.project().role_of(leaver) is None
    with pytest.raises(NotFound):  # gone: they no longer see the project
        members.remove(RemoveMember(project_id=team.project_id, user_id=leaver, caller=person(leaver)))


def test_a_user_who_is_not_a_member_is_not_found(members: Members, team: Team) -> None:
    stranger = team.register().id
    with pytest.raises(NotFound):
        members.change_role(ChangeMemberRole(project_id=team.project_id, user_id=stranger, role=Role.ADMIN,
                                             caller=team.owner))
    with pytest.raises(NotFound):
        members.remove(RemoveMember(project_id=team.project_id, user_id=stranger, caller=team.owner))


def test_giving_the_same_role_records_nothing(members: Members, team: Team) -> None:
    target = team.member(Role.AUDITOR)
    version = team.project().version
    done = members.change_role(ChangeMemberRole(project_id=team.project_id, user_id=target, role=Role.AUDITOR,
                                                caller=team.owner))
    assert done == MemberChanged(user_id=target, role=Role.AUDITOR, position=0)
    assert team.project().version == version


def project_racer(team: Team, monkeypatch: pytest.MonkeyPatch, change: Callable[[Project], None], times: int) -> Racer:
    """A competing change of the project just before each of the handler's first ``times`` saves."""

    def compete(save: Callable[..., Any]) -> None:
        competing = team.project()
        change(competing)
        save(competing)

    return Racer(team.world.app, monkeypatch, compete, times)


def test_a_concurrent_change_is_decided_again_on_the_fresh_stream(members: Members, team: Team,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = team.member(Role.DEVELOPER), team.member(Role.DEVELOPER)
    racer = project_racer(team, monkeypatch, lambda p: p.change_member_role(user_id=second, role=Role.AUDITOR,
                                                                            actor="user:other"), times=1)
    members.change_role(ChangeMemberRole(project_id=team.project_id, user_id=first, role=Role.ADMIN,
                                         caller=team.owner))
    assert racer.saves == 2
    assert team.project().members == {team.owner_id: Role.OWNER, first: Role.ADMIN, second: Role.AUDITOR}


def test_the_retry_sees_the_callers_own_demotion(members: Members, team: Team,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    admin = team.member(Role.ADMIN)
    target = team.member(Role.DEVELOPER)
    project_racer(team, monkeypatch,
                  lambda p: p.change_member_role(user_id=admin, role=Role.DEVELOPER, actor="user:o"), times=1)
    with pytest.raises(Forbidden):
        members.remove(RemoveMember(project_id=team.project_id, user_id=target, caller=person(admin)))
    assert team.project().role_of(target) is Role.DEVELOPER


def test_two_owners_leaving_at_once_cannot_leave_the_project_ownerless(members: Members, team: Team,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    other_owner = team.member(Role.OWNER)
    project_racer(team, monkeypatch, lambda p: p.remove_member(user_id=other_owner, actor=user_actor(other_owner)),
                  times=1)
    with pytest.raises(InvariantViolated):
        members.remove(RemoveMember(project_id=team.project_id, user_id=team.owner_id, caller=team.owner))
    assert team.project().members == {team.owner_id: Role.OWNER}


def test_a_command_that_keeps_losing_is_a_conflict(members: Members, team: Team,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    target = team.member(Role.DEVELOPER)
    racer = project_racer(team, monkeypatch,
                          lambda p: p.add_member(user_id=uuid4(), role=Role.AUDITOR, actor="user:o"), times=99)
    with pytest.raises(Conflict):
        members.change_role(ChangeMemberRole(project_id=team.project_id, user_id=target, role=Role.ADMIN,
                                             caller=team.owner))
    assert racer.saves == 3
    assert team.project().role_of(target) is Role.DEVELOPER

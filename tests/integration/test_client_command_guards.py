"""Creating a client and rotating its secret act only if the caller's rights still hold when the client is saved:
the save is guarded by the project's version the rights were read at, so a role lowered meanwhile stops the
command (409, and asking again is refused), on the real store. The HTTP routes ask again themselves
(``Clients.on_fresh_rights``): another change of the project meanwhile does not refuse the command, a lowered role
refuses it as such."""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest

from application.accounts import NewClient, SignedUp
from application.authz import Authorization, Principal, authorize
from application.clients import ATTEMPTS, AddClient, RotateSecret
from application.members import AddMember, ChangeMemberRole
from domain.client import Client
from domain.errors import Conflict, Forbidden
from domain.project import Project
from domain.scopes import Role
from infrastructure.bootstrap import Container
from tests.integration.support import head, sign_up
from tests.integration.webhook_support import owner
from tests.racer import Racer


def test_a_role_lowered_while_a_client_command_is_decided_stops_it(container: Container) -> None:
    acme, colleague = sign_up(container), sign_up(container)
    project = acme.project.id
    container.members_admin.add(AddMember(project_id=project, email=colleague.user.email, role=Role.ADMIN,
                                    caller=owner(acme)))
    admin = owner(colleague)
    granted = authorize(container.app, admin, project, "clients:write")  # read while still an admin
    target = acme.client.client.client_id
    container.members_admin.change_role(ChangeMemberRole(project_id=project, user_id=colleague.user.id,
                                                   role=Role.AUDITOR, caller=owner(acme)))
    before = head(container)
    with pytest.raises(Conflict):
        container.clients.add(AddClient(project_id=project, name="late", actor=admin.actor,
                                         creator_permissions=granted.permissions, scope="members:write project:read",
                                         decided_on=granted.version))
    with pytest.raises(Conflict):
        container.clients.rotate(RotateSecret(project_id=project, client_id=target, actor=admin.actor,
                                              caller_permissions=granted.permissions,
                                              decided_on=granted.version))
    assert head(container) == before  # nothing was saved
    with pytest.raises(Forbidden):  # asked again, on the project as it is now
        authorize(container.app, admin, project, "clients:write")
    current = authorize(container.app, owner(acme), project, "clients:write")
    made = container.clients.add(AddClient(project_id=project, name="on time", actor="system",
                                           creator_permissions=current.permissions,
                                           decided_on=current.version))
    assert made.client.project_id == project


def project_change(container: Container, acme: SignedUp, change: Callable[[Project], None]) -> Callable[..., None]:
    """A competing change of acme's project, recorded with the store's own save (see ``Racer``)."""

    def compete(save: Callable[..., Any]) -> None:
        project = container.app.load(acme.project.id, Project)
        change(project)
        save(project)

    return compete


def other_rotation(container: Container, acme: SignedUp, theirs: list[str]) -> Callable[..., None]:
    """Another caller's rotation of acme's client, recorded with the store's own save; its secret goes in ``theirs``."""

    def rotate(save: Callable[..., Any]) -> None:
        client = container.app.load(acme.client.client.id, Client)
        theirs.append(container.clients.minter.client_secret())
        client.rotate_secret(secret_hash=container.clients.secrets.hash(theirs[-1]),
                             secret_hint=container.clients.minter.hint(theirs[-1]),
                             secret_expires_at=datetime.now(tz=UTC) + timedelta(days=90),
                             previous_secret_expires_at=datetime.now(tz=UTC), actor="system")
        save(client)

    return rotate


def adding(container: Container, acme: SignedUp, caller: Principal) -> Callable[[Authorization], NewClient]:
    """What the HTTP route runs for each decision: a client made with the rights just read."""
    return lambda granted: container.clients.add(AddClient(
        project_id=acme.project.id, name="ci", actor=caller.actor, creator_permissions=granted.permissions,
        decided_on=granted.version))


def test_a_client_command_that_lost_to_a_project_change_is_decided_again(container: Container,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    acme, colleague = sign_up(container), sign_up(container)
    racer = Racer(container.app, monkeypatch, project_change(container, acme, lambda p: p.add_member(
        user_id=colleague.user.id, role=Role.DEVELOPER, actor="system")), times=1)
    new = container.clients.on_fresh_rights(owner(acme), acme.project.id, adding(container, acme, owner(acme)))
    assert racer.saves == 2  # the first save lost to the colleague's addition; decided again, it went through
    assert container.app.load(new.client.id, Client).name == "ci"
    assert container.app.load(acme.project.id, Project).role_of(colleague.user.id) is Role.DEVELOPER


def test_a_role_lowered_meanwhile_is_refused_as_such_when_decided_again(container: Container,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    acme, colleague = sign_up(container), sign_up(container)
    container.members_admin.add(AddMember(project_id=acme.project.id, email=colleague.user.email, role=Role.ADMIN,
                                          caller=owner(acme)))
    before = head(container)
    racer = Racer(container.app, monkeypatch, project_change(container, acme, lambda p: p.change_member_role(
        user_id=colleague.user.id, role=Role.AUDITOR, actor="system")), times=1)
    with pytest.raises(Forbidden, match="clients:write"):  # not a 409: asking again would be refused too
        container.clients.on_fresh_rights(owner(colleague), acme.project.id,
                                          adding(container, acme, owner(colleague)))
    assert racer.saves == 1
    assert head(container) == before + 1  # the demotion alone: no client


def test_a_rotation_that_lost_to_another_rotation_is_a_conflict_not_a_cut_secret(
        container: Container, monkeypatch: pytest.MonkeyPatch) -> None:
    """Decided again on top of the other rotation, it would make the secret just handed to the other caller the
    previous one, dead at once without a grace period: it answers 409 instead, and the other caller's secret stands."""
    acme = sign_up(container)
    client_id, theirs = acme.client.client.client_id, []

    rotate_first = other_rotation(container, acme, theirs)

    racer = Racer(container.app, monkeypatch, rotate_first, times=1)
    with pytest.raises(Conflict):
        container.clients.on_fresh_rights(owner(acme), acme.project.id, lambda granted: container.clients.rotate(
            RotateSecret(project_id=acme.project.id, client_id=client_id, actor="system",
                         caller_permissions=granted.permissions, decided_on=granted.version)))
    assert racer.saves == 1
    client = container.app.load(acme.client.client.id, Client)
    assert client.version == acme.client.client.version + 1  # the other rotation alone
    assert client.secret_hash == container.clients.secrets.hash(theirs[0])


def test_a_rotation_that_lost_to_another_rotation_and_a_project_change_is_still_a_conflict(
        container: Container, monkeypatch: pytest.MonkeyPatch) -> None:
    """The project moved too (a colleague added meanwhile): deciding again would still act on top of the other
    rotation and cut its secret, so the client's own change decides: 409, and the other caller's secret stands."""
    acme = sign_up(container)
    theirs: list[str] = []
    add_colleague = project_change(container, acme, lambda p: p.add_member(user_id=uuid4(), role=Role.AUDITOR,
                                                                          actor="system"))

    rotate_first = other_rotation(container, acme, theirs)

    def rotate_first_and_change_the_project(save: Callable[..., Any]) -> None:
        rotate_first(save)
        add_colleague(save)

    racer = Racer(container.app, monkeypatch, rotate_first_and_change_the_project, times=1)
    with pytest.raises(Conflict, match="the client changed"):
        container.clients.on_fresh_rights(owner(acme), acme.project.id, lambda granted: container.clients.rotate(
            RotateSecret(project_id=acme.project.id, client_id=acme.client.client.client_id, actor="system",
                         caller_permissions=granted.permissions, decided_on=granted.version)))
    assert racer.saves == 1
    client = container.app.load(acme.client.client.id, Client)
    assert client.version == acme.client.client.version + 1  # the other rotation alone
    assert client.secret_hash == container.clients.secrets.hash(theirs[0])


def test_a_client_command_that_keeps_losing_is_a_conflict(container: Container,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    acme = sign_up(container)
    racer = Racer(container.app, monkeypatch, project_change(container, acme, lambda p: p.add_member(
        user_id=uuid4(), role=Role.AUDITOR, actor="system")), times=99)
    before = head(container)
    with pytest.raises(Conflict):
        container.clients.on_fresh_rights(owner(acme), acme.project.id, adding(container, acme, owner(acme)))
    assert racer.saves == ATTEMPTS
    assert head(container) == before + ATTEMPTS  # the racer's changes alone: no client

"""Creating a client and rotating its secret act only if the caller's rights still hold when the client is saved:
the save is guarded by the project's version the rights were read at, so a role lowered meanwhile stops the
command (409, and asking again is refused), on the real store."""

import pytest

from application.authz import authorize
from application.clients import AddClient, RotateSecret
from application.members import AddMember, ChangeMemberRole
from domain.errors import Conflict, Forbidden
from domain.scopes import Role
from infrastructure.bootstrap import Container
from tests.integration.support import head, sign_up
from tests.integration.webhook_support import owner


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

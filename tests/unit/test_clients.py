"""Client commands on the in-memory store: scope ceilings, lifetime bounds, rotation with grace."""

from typing import Any

import pytest

from application.accounts import SignedUp
from application.clients import AddClient, Clients, RotateSecret
from application.oauth.errors import InvalidClient
from application.oauth.grants import TokenRequest
from domain.errors import Forbidden, InvalidArgument, NotFound
from domain.scopes import ALL_SCOPES
from tests.unit.conftest import World

ACTOR = "user:00000000-0000-0000-0000-000000000001"


@pytest.fixture
def clients(world: World) -> Clients:
    return Clients(app=world.app, accounts=world.accounts, clock=world.clock, secrets=world.secrets,
                   minter=world.minter, lifetimes=world.settings.lifetimes)


@pytest.fixture
def acme(world: World) -> SignedUp:
    return world.sign_up("owner@acme.test")


def add(acme: SignedUp, **changes: Any) -> AddClient:
    fields: dict[str, Any] = {"project_id": acme.project.id, "name": "ci", "actor": ACTOR,
                              "creator_permissions": ALL_SCOPES, **changes}
    return AddClient(**fields)


def authenticate(world: World, client_id: str, secret: str) -> None:
    world.tokens.handle(TokenRequest(grant_type="client_credentials", client_id=client_id, client_secret=secret))


def test_a_client_gets_the_default_read_only_scope(clients: Clients, acme: SignedUp) -> None:
    assert clients.add(add(acme)).client.scope == "clients:read project:read tokens:read"


def test_a_client_never_gets_more_scope_than_its_creator_holds(clients: Clients, acme: SignedUp) -> None:
    with pytest.raises(Forbidden, match="members:write"):
        clients.add(add(acme, scope="project:read members:write",
                        creator_permissions=frozenset({"project:read", "clients:write"})))


@pytest.mark.parametrize("changes", [{"scope": "project:read bogus"}, {"scope": "  "}, {"access_token_ttl": 4},
                                     {"access_token_ttl": 86401}, {"secret_ttl": 0},
                                     {"secret_ttl": 3 * 365 * 24 * 3600}])
def test_out_of_bounds_requests_are_refused_not_clamped(clients: Clients, acme: SignedUp,
                                                        changes: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument):
        clients.add(add(acme, **changes))


def test_rotation_keeps_the_old_secret_for_the_grace_period_only(world: World, clients: Clients,
                                                                 acme: SignedUp) -> None:
    client_id, old = acme.client.client.client_id, acme.client.client_secret
    rotated = clients.rotate(RotateSecret(project_id=acme.project.id, client_id=client_id, actor=ACTOR,
                                          caller_permissions=ALL_SCOPES, grace_period=60))
    authenticate(world, client_id, old)
    authenticate(world, client_id, rotated.client_secret)
    world.clock.advance(seconds=60)
    with pytest.raises(InvalidClient):
        authenticate(world, client_id, old)
    authenticate(world, client_id, rotated.client_secret)


def test_rotation_is_confined_to_the_clients_project(world: World, clients: Clients, acme: SignedUp) -> None:
    other = world.sign_up("owner@other.test", project_name="Other")
    with pytest.raises(NotFound):
        clients.rotate(RotateSecret(project_id=acme.project.id, client_id=other.client.client.client_id,
                                    actor=ACTOR, caller_permissions=ALL_SCOPES))
    with pytest.raises(InvalidArgument):
        clients.rotate(RotateSecret(project_id=acme.project.id, client_id=acme.client.client.client_id,
                                    actor=ACTOR, caller_permissions=ALL_SCOPES, grace_period=-1))
    authenticate(world, other.client.client.client_id, other.client.client_secret)


def test_a_caller_rotates_only_a_client_whose_scope_it_holds(world: World, clients: Clients, acme: SignedUp) -> None:
    # The new secret is the client's whole authority: rotating a broader client would hand the caller its scope.
    broad = clients.add(add(acme, scope="project:read members:write audit:read"))
    client_id = broad.client.client_id
    developer = frozenset({"project:read", "clients:read", "clients:write", "tokens:read"})
    with pytest.raises(Forbidden, match="audit:read members:write"):
        clients.rotate(RotateSecret(project_id=acme.project.id, client_id=client_id, actor=ACTOR,
                                    caller_permissions=developer))
    authenticate(world, client_id, broad.client_secret)  # refused before anything changed
    assert world.app.repository.get(broad.client.id).version == broad.client.version
    narrow = clients.add(add(acme, scope="project:read tokens:read"))
    rotated = clients.rotate(RotateSecret(project_id=acme.project.id, client_id=narrow.client.client_id,
                                          actor=ACTOR, caller_permissions=developer))
    authenticate(world, narrow.client.client_id, rotated.client_secret)

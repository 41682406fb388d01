"""Accounts on the in-memory store: sign-up in one save, duplicate emails, projects, clients, no secret at rest."""

from datetime import timedelta
from uuid import uuid4

import pytest

from application.accounts import CreateClient, SignUp
from application.oauth.errors import TemporarilyUnavailable, TooManyAttempts
from application.oauth.grants import TokenRequest
from application.oauth.limits import AttemptLimits
from domain.client import Client
from domain.errors import Conflict, InvalidArgument
from domain.ids import email_index_id, user_actor
from domain.project import Project
from domain.scopes import DEFAULT_CLIENT_SCOPE, Role
from domain.user import EmailIndex, User
from tests.unit.conftest import PASSWORD, T0, World, build_world


def stored_events(world: World) -> list[object]:
    notifications = world.app.recorder.select_notifications(start=1, limit=10_000)
    return [world.app.mapper.to_domain_event(n) for n in notifications]


def test_sign_up_creates_user_index_project_and_client_in_one_save(world: World) -> None:
    before = world.position()
    signed = world.sign_up("Ada@Example.com", project_name="Engines")
    assert world.position() == before + 4
    user = world.app.load(signed.user.id, User)
    assert user.email == "ada@example.com"
    assert world.passwords.verify(user.password_hash, PASSWORD)
    assert world.app.load(email_index_id("ada@example.com"), EmailIndex).user_id == user.id
    project = world.app.load(signed.project.id, Project)
    assert project.name == "Engines"
    assert project.members == {user.id: Role.OWNER}
    client = world.app.load(signed.client.client.id, Client)
    assert client.project_id == project.id
    assert client.scopes == set(DEFAULT_CLIENT_SCOPE)
    assert client.secret_matches(world.secrets.hash(signed.client.client_secret), T0)
    assert client.secret_expires_at == T0 + timedelta(seconds=world.settings.lifetimes.client_secret_ttl)
    assert world.minter.is_client_secret(signed.client.client_secret)
    assert client.secret_hint == "klcs_..." + signed.client.client_secret[-4:]
    actors = {e.actor for e in stored_events(world)[before:]}  # type: ignore[attr-defined]
    assert actors == {user_actor(user.id)}


def test_duplicate_email_in_another_case_conflicts_and_writes_nothing(world: World) -> None:
    first = world.sign_up("ada@example.com")
    before = world.position()
    with pytest.raises(Conflict):
        world.sign_up("  ADA@example.COM ", password="another password")
    assert world.position() == before
    registered = [e for e in stored_events(world) if type(e).__name__ == "UserRegistered"]
    assert [e.originator_id for e in registered] == [first.user.id]
    assert world.app.load(email_index_id("ada@example.com"), EmailIndex).user_id == first.user.id
    # The first account's password still works, the second's never did.
    login = world.tokens.handle(TokenRequest(grant_type="password", client_id="dashboard",
                                             username="ADA@example.com", password=PASSWORD))
    assert world.validator.validate(login.access_token)["sub"] == str(first.user.id)


def test_two_sign_ups_get_distinct_everything(world: World) -> None:
    a, b = world.sign_up("a@example.com"), world.sign_up("b@example.com")
    assert a.user.id != b.user.id
    assert a.project.id != b.project.id
    assert a.client.client.client_id != b.client.client.client_id
    assert a.client.client_secret != b.client.client_secret


def test_create_project_makes_the_caller_owner(world: World) -> None:
    owner = world.sign_up("o@example.com").user.id
    project = world.accounts.create_project(name="Second", owner_id=owner)
    loaded = world.app.load(project.id, Project)
    assert loaded.role_of(owner) is Role.OWNER
    assert loaded.name == "Second"


def test_new_client_uses_the_lifetime_policy_and_is_not_saved(world: World) -> None:
    project_id = uuid4()
    new = world.accounts.new_client(CreateClient(project_id=project_id, name="ci", actor="user:x",
                                                 scope=("tokens:read", "project:read"), secret_ttl=10**12,
                                                 access_token_ttl=60))
    lifetimes = world.settings.lifetimes
    assert new.client.secret_expires_at == T0 + timedelta(seconds=lifetimes.max_client_secret_ttl)
    assert new.client.scope == "project:read tokens:read"
    assert new.client.access_token_ttl == 60
    assert world.app.find(new.client.id, Client) is None


def test_no_secret_is_stored_in_plain_text() -> None:
    world = build_world()
    signed = world.sign_up("secretive@example.com", password="a-very-secret-password")
    issued = world.tokens.handle(TokenRequest(grant_type="password", client_id="dashboard",
                                              username="secretive@example.com", password="a-very-secret-password"))
    world.tokens.handle(TokenRequest(grant_type="client_credentials", client_id=signed.client.client.client_id,
                                     client_secret=signed.client.client_secret))
    assert issued.refresh_token is not None
    states = b"".join(n.state for n in world.app.recorder.select_notifications(start=1, limit=10_000))
    assert b"secretive@example.com" in states  # the control: the state is readable as stored
    for secret in ("a-very-secret-password", signed.client.client_secret, issued.refresh_token, issued.access_token,
                   signed.client.client_secret[5:-4]):
        assert secret.encode() not in states
    keys = world.keys.snapshot
    assert keys.active_kid.encode() in states


@pytest.mark.parametrize("email", [
    "ka\u200bte@corp.example",  # a zero-width space
    "kate@corp.example\u200d",  # a zero-width joiner at the end
    "jose\u0301@corp.example",  # a decomposed accent (NFC and NFKC compose it)
    "\uff4bate@corp.example",  # a fullwidth k
    "kate\u202e@corp.example",  # a right-to-left override
    "ka\u00a0te@corp.example",  # a no-break space
    "ka\u034fte@corp.example",  # a combining grapheme joiner (category Mn, ignorable by default)
    "kate\ufe0f@corp.example",  # a variation selector
    "ka\u115fte@corp.example",  # a Hangul filler (category Lo)
])
def test_an_address_that_could_pass_for_another_is_refused_before_anything_is_written(world: World,
                                                                                      email: str) -> None:
    before = world.position()
    with pytest.raises(InvalidArgument) as refused:
        world.sign_up(email)
    assert world.position() == before
    assert email not in str(refused.value)


def test_a_composed_non_ascii_address_signs_up(world: World) -> None:
    signed = world.sign_up("jos\u00e9@corp.example")
    assert world.app.load(signed.user.id, User).email == "jos\u00e9@corp.example"


def test_sign_ups_from_one_address_stop_at_the_limit_whether_they_succeed_or_not() -> None:
    world = build_world(limits=AttemptLimits(per_signup=3))
    try:
        world.accounts.sign_up(SignUp(email="a@corp.example", password=PASSWORD, project_name="A",
                                      source="198.51.100.7"))
        with pytest.raises(Conflict):  # a refused sign-up counts too: it told whether the e-mail exists
            world.accounts.sign_up(SignUp(email="a@corp.example", password=PASSWORD, project_name="A",
                                          source="198.51.100.7"))
        world.accounts.sign_up(SignUp(email="b@corp.example", password=PASSWORD, project_name="B",
                                      source="198.51.100.7"))
        before = world.position()
        with pytest.raises(TooManyAttempts) as refused:
            world.accounts.sign_up(SignUp(email="c@corp.example", password=PASSWORD, project_name="C",
                                          source="198.51.100.7"))
        assert refused.value.retry_after > 0 and world.position() == before
        world.accounts.sign_up(SignUp(email="c@corp.example", password=PASSWORD, project_name="C",
                                      source="198.51.100.8"))
    finally:
        world.app.close()


def test_a_sign_up_fails_closed_when_the_limiter_is_down(world: World) -> None:
    world.limiter.down = True
    before = world.position()
    with pytest.raises(TemporarilyUnavailable):
        world.accounts.sign_up(SignUp(email="a@corp.example", password=PASSWORD, project_name="A",
                                      source="198.51.100.7"))
    assert world.position() == before

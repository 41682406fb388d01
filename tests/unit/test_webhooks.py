"""Webhook commands and the Project's webhooks on the in-memory store: roles, validation, the secret shown once and
recorded only encrypted; the domain rules of the Project aggregate."""

import json
from uuid import UUID, uuid4

import pytest

from application.accounts import SignedUp
from application.authz import Principal
from application.members import AddMember, Members
from application.webhooks import ConfiguredWebhook, ConfigureWebhook, RemoveWebhook, Webhooks
from domain.errors import Forbidden, InvalidArgument, InvariantViolated, NotFound
from domain.project import Project
from domain.scopes import ALL_SCOPES, Role
from domain.webhooks import MAX_WEBHOOKS, NOTIFICATION_TYPES, url_hint
from infrastructure.crypto.hashing import derive_key
from infrastructure.crypto.webhook_secrets import WebhookSecrets
from infrastructure.webhook_setup import url_checker
from tests.unit.conftest import SERVER_KEY, World

URL = "https://hooks.example.com/keyledger?channel=ops"


def person(user_id: UUID, scopes: frozenset[str] = ALL_SCOPES) -> Principal:
    return Principal(client_id="dashboard", user_id=user_id, project_id=None, scopes=scopes, token_id=uuid4())


@pytest.fixture
def secrets() -> WebhookSecrets:
    return WebhookSecrets(derive_key(SERVER_KEY, "keyledger webhook secret encryption v1"))


@pytest.fixture
def webhooks(world: World, secrets: WebhookSecrets) -> Webhooks:
    return Webhooks(app=world.app, secrets=secrets, check_url=url_checker(allow_private=False))


@pytest.fixture
def acme(world: World) -> SignedUp:
    return world.sign_up("owner@acme.test")


def configure(webhooks: Webhooks, project_id: UUID, caller: Principal, url: str = URL,
              types: tuple[str, ...] = ("member.added",)) -> ConfiguredWebhook:
    return webhooks.configure(ConfigureWebhook(project_id=project_id, url=url, event_types=types, caller=caller))


def member(world: World, acme: SignedUp, role: Role) -> Principal:
    other = world.sign_up(f"{role}-{uuid4().hex[:6]}@acme.test", project_name="Own")
    Members(app=world.app).add(AddMember(project_id=acme.project.id, email=other.user.email, role=role,
                                         caller=person(acme.user.id)))
    return person(other.user.id)


def test_an_owner_registers_a_webhook_and_sees_its_secret_once(world: World, webhooks: Webhooks,
                                                               secrets: WebhookSecrets, acme: SignedUp) -> None:
    done = webhooks.configure(ConfigureWebhook(project_id=acme.project.id, url=URL,
                                               event_types=("member.removed", "member.added", "member.added"),
                                               caller=person(acme.user.id)))
    assert done.secret.startswith("whsec_") and done.event_types == ("member.added", "member.removed")
    project = world.app.load(acme.project.id, Project)
    assert project.webhooks[done.webhook_id].url == URL
    stored = [n for n in world.app.recorder.select_notifications(start=1, limit=10_000)
              if n.topic.endswith("Project.WebhookConfigured")]
    [event] = stored
    state = bytes(event.state).decode()
    assert done.secret not in state and done.secret[6:30] not in state
    encrypted = json.loads(state)["encrypted_secret"]
    assert secrets.open(done.webhook_id, encrypted) == done.secret


@pytest.mark.parametrize(("role", "allowed"), [(Role.ADMIN, True), (Role.DEVELOPER, False),
                                               (Role.AUDITOR, False)])
def test_only_owners_and_admins_manage_webhooks(world: World, webhooks: Webhooks, acme: SignedUp, role: Role,
                                                allowed: bool) -> None:
    caller = member(world, acme, role)
    if allowed:
        configure(webhooks, acme.project.id, caller)
    else:
        with pytest.raises(Forbidden):
            configure(webhooks, acme.project.id, caller)
    hook = configure(webhooks, acme.project.id, person(acme.user.id))
    remove = RemoveWebhook(project_id=acme.project.id, webhook_id=hook.webhook_id, caller=caller)
    if allowed:
        webhooks.remove(remove)
    else:
        with pytest.raises(Forbidden):
            webhooks.remove(remove)


def test_another_projects_people_and_keys_see_no_project(world: World, webhooks: Webhooks, acme: SignedUp) -> None:
    globex = world.sign_up("owner@globex.test", project_name="Globex")
    with pytest.raises(NotFound):
        configure(webhooks, acme.project.id, person(globex.user.id))
    hook = configure(webhooks, acme.project.id, person(acme.user.id))
    with pytest.raises(NotFound):
        webhooks.remove(RemoveWebhook(project_id=globex.project.id, webhook_id=hook.webhook_id,
                                      caller=person(globex.user.id)))
    client = globex.client.client
    key = Principal(client_id=client.client_id, user_id=None, project_id=globex.project.id, scopes=ALL_SCOPES,
                    token_id=uuid4())
    with pytest.raises(NotFound):
        configure(webhooks, acme.project.id, key)


@pytest.mark.parametrize("url", ["http://hooks.example.com/x", "ftp://hooks.example.com/", "https://10.0.0.8/x",
                                 "https://127.0.0.1/x", "https://[::1]/x", "https://169.254.169.254/latest",
                                 "https://localhost/x", "https://a.localhost/x", "https://user:pw@example.com/",
                                 "https://example.com/#frag", "https:///nohost", "not a url", "https://[::ffff:10.0.0.1]/",
                                 "https://example.com:0/", "https://example.com:99999/"])
def test_unsafe_urls_are_refused(webhooks: Webhooks, acme: SignedUp, url: str) -> None:
    with pytest.raises(InvalidArgument):
        configure(webhooks, acme.project.id, person(acme.user.id), url=url)


@pytest.mark.parametrize("types", [(), ("member.joined",), ("member.added", "nope")])
def test_unknown_or_missing_event_types_are_refused(webhooks: Webhooks, acme: SignedUp,
                                                    types: tuple[str, ...]) -> None:
    with pytest.raises(InvalidArgument):
        configure(webhooks, acme.project.id, person(acme.user.id), types=types)


def test_every_type_of_the_issue_can_be_subscribed() -> None:
    assert {"client.secret.expiring", "client.secret.rotated", "client.secret.expired", "client.revoked",
            "token.refresh_reuse_detected", "member.added", "member.removed", "signing_key.rotated"} == \
        NOTIFICATION_TYPES


def test_a_project_has_a_bounded_number_of_webhooks(webhooks: Webhooks, acme: SignedUp) -> None:
    for _ in range(MAX_WEBHOOKS):
        configure(webhooks, acme.project.id, person(acme.user.id))
    with pytest.raises(InvariantViolated):
        configure(webhooks, acme.project.id, person(acme.user.id))


def test_removing_an_unknown_webhook_is_not_found(webhooks: Webhooks, acme: SignedUp) -> None:
    with pytest.raises(NotFound):
        webhooks.remove(RemoveWebhook(project_id=acme.project.id, webhook_id=uuid4(), caller=person(acme.user.id)))


def test_the_aggregate_keeps_webhooks_through_its_events(world: World) -> None:
    owner = uuid4()
    project = Project(project_id=uuid4(), name="P", owner_id=owner, actor="system")
    hook = uuid4()
    project.configure_webhook(webhook_id=hook, url=URL, event_types=["member.added"], encrypted_secret="x",
                              secret_hint="whsec_...abcd", actor="system")
    with pytest.raises(InvariantViolated):
        project.configure_webhook(webhook_id=hook, url=URL, event_types=["member.added"], encrypted_secret="x",
                                  secret_hint="h", actor="system")
    world.app.save(project)
    copy = world.app.load(project.id, Project)
    assert copy.webhooks[hook].wants("member.added") and not copy.webhooks[hook].wants("member.removed")
    copy.remove_webhook(webhook_id=hook, actor="system")
    world.app.save(copy)
    assert world.app.load(project.id, Project).webhooks == {}


def test_an_outsider_learns_nothing_from_bad_input(world: World, webhooks: Webhooks, acme: SignedUp) -> None:
    globex = world.sign_up("owner@globex.test", project_name="Globex")
    with pytest.raises(NotFound):
        configure(webhooks, acme.project.id, person(globex.user.id), url="http://10.0.0.1/", types=("nope",))


@pytest.mark.parametrize(("url", "hint"), [
    ("https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX", "https://hooks.slack.com/..."),
    ("https://hooks.example.com/keyledger?channel=ops", "https://hooks.example.com/..."),
    ("https://hooks.example.com?token=abc", "https://hooks.example.com/..."),
    ("https://hooks.example.com:8443/", "https://hooks.example.com:8443/"),
    ("https://hooks.example.com", "https://hooks.example.com/"),
    ("https://[2001:db8::1]:8443/in", "https://[2001:db8::1]:8443/..."),
    ("https://user:pass@hooks.example.com/in", "https://hooks.example.com/..."),
])
def test_a_url_hint_keeps_the_origin_and_nothing_that_may_be_a_credential(url: str, hint: str) -> None:
    assert url_hint(url) == hint

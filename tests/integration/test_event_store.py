"""The event store on real PostgreSQL: sign-up atomicity, event metadata, token durability, Redis wiring."""

from uuid import UUID

import jwt
import pytest

from application.accounts import SignUp
from application.oauth.grants import TokenRequest
from domain.client import Client
from domain.errors import Conflict
from domain.ids import DASHBOARD_CLIENT_ID, client_actor, email_index_id, normalize_email, refresh_token_aggregate_id
from domain.project import Project
from domain.scopes import Role
from domain.token import Token, TokenKind
from domain.user import EmailIndex, User
from infrastructure.bootstrap import Container
from tests.integration.support import PASSWORD, fresh_email, head, notifications, sign_up, state, uuid_of

pytestmark = pytest.mark.integration

SIGN_UP_TOPICS = {"domain.user:User.UserRegistered", "domain.user:EmailIndex.EmailReserved",
                  "domain.project:Project.ProjectCreated", "domain.client:Client.ClientCreated"}


def test_sign_up_stores_its_four_events_in_one_transaction(container: Container) -> None:
    before = head(container)
    email = "  " + fresh_email().upper()
    signed = sign_up(container, email=email, project="Atomic")
    ids = {signed.user.id, email_index_id(email), signed.project.id, signed.client.client.id}

    mine = [n for n in notifications(container, after=before) if n.originator_id in ids]
    assert {n.topic for n in mine} == SIGN_UP_TOPICS
    assert all(n.originator_version == 1 for n in mine)
    positions = sorted(n.id for n in mine)
    assert positions == list(range(positions[0], positions[0] + 4)), "the four events were not inserted together"

    user = container.app.repository.get(signed.user.id)
    assert isinstance(user, User) and user.email == normalize_email(email)
    index = container.app.repository.get(email_index_id(email))
    assert isinstance(index, EmailIndex) and index.user_id == signed.user.id
    project = container.app.repository.get(signed.project.id)
    assert isinstance(project, Project) and project.members == {signed.user.id: Role.OWNER}
    client = container.app.repository.get(signed.client.client.id)
    assert isinstance(client, Client) and client.project_id == signed.project.id
    assert client.client_id == signed.client.client.client_id


def test_refused_sign_up_writes_nothing(container: Container) -> None:
    email = fresh_email()
    sign_up(container, email=email)
    before = head(container)
    with pytest.raises(Conflict):
        container.accounts.sign_up(SignUp(email=email.upper(), password=PASSWORD, project_name="Second"))
    assert head(container) == before, "a refused sign-up left a partial write (user, project or client)"


def test_every_stored_event_names_its_actor_and_project_events_their_project(container: Container) -> None:
    signed = sign_up(container)
    client = signed.client.client
    issued = container.tokens.handle(TokenRequest(grant_type="client_credentials", client_id=client.client_id,
                                                  client_secret=signed.client.client_secret))
    jti = UUID(jwt.decode(issued.access_token, options={"verify_signature": False})["jti"])

    seen: dict[UUID, dict[str, object]] = {}
    for notification in notifications(container):
        data = state(notification)
        assert "actor" in data, f"{notification.topic} at {notification.id} has no actor"
        if notification.topic.endswith(("Client.ClientCreated", "Token.TokenIssued")) and \
                data.get("client_id") != DASHBOARD_CLIENT_ID:
            assert uuid_of(data.get("project_id")) is not None, f"{notification.topic} at {notification.id}"
        seen[notification.originator_id] = data
    assert uuid_of(seen[client.id]["project_id"]) == signed.project.id
    assert uuid_of(seen[jti]["project_id"]) == signed.project.id
    assert seen[jti]["actor"] == client_actor(client.client_id)


def test_client_credentials_token_is_stored_when_handle_returns(container: Container) -> None:
    signed = sign_up(container)
    client = signed.client.client
    issued = container.tokens.handle(TokenRequest(grant_type="client_credentials", client_id=client.client_id,
                                                  client_secret=signed.client.client_secret))
    claims = container.validator.validate(issued.access_token)
    jti = UUID(claims["jti"])
    stored = container.app.recorder.select_events(jti)
    assert [e.topic for e in stored] == ["domain.token:Token.TokenIssued"]
    token = container.app.repository.get(jti)
    assert isinstance(token, Token)
    assert token.kind == TokenKind.ACCESS
    assert token.client_id == client.client_id == claims["client_id"]
    assert token.project_id == signed.project.id == UUID(claims["project_id"])
    assert token.user_id is None and token.scope == issued.scope


def test_refresh_token_is_found_from_its_value(container: Container) -> None:
    email = fresh_email()
    signed = sign_up(container, email=email)
    issued = container.tokens.handle(TokenRequest(grant_type="password", client_id=DASHBOARD_CLIENT_ID,
                                                  username=email.upper(), password=PASSWORD))
    assert issued.refresh_token is not None
    refresh_id = refresh_token_aggregate_id(container.tokens.secrets.hash(issued.refresh_token))
    refresh = container.app.repository.get(refresh_id)
    assert isinstance(refresh, Token)
    assert refresh.kind == TokenKind.REFRESH and refresh.user_id == signed.user.id
    assert refresh.client_id == DASHBOARD_CLIENT_ID and refresh.family_id == refresh_id
    access = container.app.repository.get(UUID(container.validator.validate(issued.access_token)["jti"]))
    assert isinstance(access, Token)
    assert access.kind == TokenKind.ACCESS and access.user_id == signed.user.id and access.family_id == refresh_id
    for stored in container.app.recorder.select_events(refresh_id) + container.app.recorder.select_events(access.id):
        assert issued.refresh_token.encode() not in stored.state
        assert issued.access_token.encode() not in stored.state


def test_redis_client_is_wired_to_a_live_server(container: Container) -> None:
    assert container.redis.ping() is True
    key = f"keyledger-test:{fresh_email()}"
    try:
        container.redis.set(key, b"ok", ex=60)
        assert container.redis.get(key) == b"ok"
    finally:
        container.redis.delete(key)

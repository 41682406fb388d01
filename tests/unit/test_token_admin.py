"""Bulk revocation and client deletion on the in-memory store."""

from dataclasses import replace
from typing import Any
from uuid import UUID, uuid4

import pytest

from application.accounts import SignedUp
from application.oauth.errors import InvalidClient
from application.oauth.grants import TokenRequest
from application.token_admin import DeleteClient, RevokeTokens, TokenAdmin
from domain.client import Client
from domain.errors import Forbidden, InvalidArgument, NotFound
from domain.ids import client_aggregate_id
from domain.scopes import ALL_SCOPES
from domain.token import Token
from tests.unit.conftest import World

ACTOR = "user:00000000-0000-0000-0000-000000000001"


@pytest.fixture
def admin(world: World) -> TokenAdmin:
    revoker = world.tokens.revoker
    return TokenAdmin(app=world.app, revoker=revoker, index=revoker.index)


def issue(world: World, signed: SignedUp) -> UUID:
    issued = world.tokens.handle(TokenRequest(grant_type="client_credentials", client_id=signed.client.client.client_id,
                                              client_secret=signed.client.client_secret))
    return UUID(str(world.validator.validate(issued.access_token)["jti"]))


class SaveCounter:
    """Counts the application's save transactions."""

    def __init__(self, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        original = world.app.save

        def counting(*aggregates: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return original(*aggregates, **kwargs)

        monkeypatch.setattr(world.app, "save", counting)


@pytest.mark.parametrize("filters", [{}, {"token_id": uuid4(), "client_id": "x"},
                                     {"client_id": "x", "user_id": uuid4()}])
def test_exactly_one_filter_is_required(admin: TokenAdmin, filters: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument):
        admin.revoke_tokens(RevokeTokens(project_id=uuid4(), actor=ACTOR, **filters))


def test_revoking_by_client_revokes_its_live_tokens_in_one_transaction(world: World, admin: TokenAdmin,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    acme = world.sign_up("owner@acme.test")
    ids = [issue(world, acme) for _ in range(3)]
    counter = SaveCounter(world, monkeypatch)
    revoked = admin.revoke_tokens(RevokeTokens(project_id=acme.project.id, actor=ACTOR,
                                               client_id=acme.client.client.client_id))
    assert revoked == 3
    assert counter.calls == 1
    for token_id in ids:
        token = world.app.load(token_id, Token)
        assert token.revoked
    assert admin.revoke_tokens(RevokeTokens(project_id=acme.project.id, actor=ACTOR,
                                            client_id=acme.client.client.client_id)) == 0


def test_revocation_is_confined_to_the_named_project(world: World, admin: TokenAdmin) -> None:
    acme, other = world.sign_up("owner@acme.test"), world.sign_up("owner@other.test", project_name="Other")
    theirs = issue(world, other)
    for filters in ({"token_id": theirs}, {"client_id": other.client.client.client_id}):
        assert admin.revoke_tokens(RevokeTokens(project_id=acme.project.id, actor=ACTOR, **filters)) == 0
    assert not world.app.load(theirs, Token).revoked


def test_expired_tokens_are_not_counted(world: World, admin: TokenAdmin) -> None:
    acme = world.sign_up("owner@acme.test")
    issue(world, acme)
    world.clock.advance(days=1)
    assert admin.revoke_tokens(RevokeTokens(project_id=acme.project.id, actor=ACTOR,
                                            client_id=acme.client.client.client_id)) == 0


def test_deleting_a_client_revokes_it_and_its_tokens_together(world: World, admin: TokenAdmin,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    acme = world.sign_up("owner@acme.test")
    ids = [issue(world, acme) for _ in range(2)]
    client_id = acme.client.client.client_id
    counter = SaveCounter(world, monkeypatch)
    assert admin.delete_client(DeleteClient(project_id=acme.project.id, client_id=client_id, actor=ACTOR,
                                            caller_permissions=ALL_SCOPES)) == 2
    assert counter.calls == 1
    assert world.app.load(client_aggregate_id(client_id), Client).revoked
    assert {list(world.app.events.get(i))[-1].reason for i in ids} == {"client deleted"}
    with pytest.raises(InvalidClient):
        issue(world, acme)
    with pytest.raises(NotFound):
        admin.delete_client(DeleteClient(project_id=acme.project.id, client_id=client_id, actor=ACTOR,
                                         caller_permissions=ALL_SCOPES))


class IssuingIndex:
    """The world's index, but a token is issued to the client right after the first selection is read: what a
    request served while the deletion loads and revokes the selected tokens does in a server."""

    def __init__(self, inner: Any, issue_once: Any) -> None:
        self._inner = inner
        self._issue_once = issue_once
        self.issued: list[UUID] = []

    def live_matching(self, **filters: Any) -> list[Any]:
        selected = self._inner.live_matching(**filters)
        if self._issue_once is not None:
            issue_once, self._issue_once = self._issue_once, None
            self.issued.append(issue_once())
        return selected

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_a_token_issued_while_its_client_is_being_deleted_is_revoked_too(world: World) -> None:
    acme = world.sign_up("owner@acme.test")
    first = issue(world, acme)
    index = IssuingIndex(world.tokens.revoker.index, lambda: issue(world, acme))
    revoker = replace(world.tokens.revoker, index=index)
    admin = TokenAdmin(app=world.app, revoker=revoker, index=index)
    client_id = acme.client.client.client_id

    assert admin.delete_client(DeleteClient(project_id=acme.project.id, client_id=client_id, actor=ACTOR,
                                            caller_permissions=ALL_SCOPES)) == 2

    (late,) = index.issued
    tokens = [world.app.load(i, Token) for i in (first, late)]
    assert all(t.revoked for t in tokens)
    reasons = [list(world.app.events.get(t.id))[-1] for t in tokens]
    assert {e.reason for e in reasons} == {"client deleted"}
    assert len({e.revocation_id for e in reasons}) == 1  # one command, one revocation id for the audit


def test_deleting_a_deleted_client_again_revokes_what_its_deletion_left_and_answers_not_found(
        world: World, admin: TokenAdmin) -> None:
    """A deletion whose transaction committed but whose late passes did not run (its caller got a 503) left a
    token issued while it ran: the caller's retry finishes the job, then answers 404 as for any client gone."""
    acme = world.sign_up("owner@acme.test")
    left = issue(world, acme)
    client = world.app.load(client_aggregate_id(acme.client.client.client_id), Client)
    client.revoke(actor=ACTOR)  # the interrupted deletion's transaction, which did not select ``left``
    world.app.save(client)
    command = DeleteClient(project_id=acme.project.id, client_id=acme.client.client.client_id, actor=ACTOR,
                           caller_permissions=ALL_SCOPES)
    with pytest.raises(NotFound):
        admin.delete_client(command)
    assert world.app.load(left, Token).revoked
    other = world.sign_up("owner@other.test", project_name="Other")
    kept = issue(world, other)
    with pytest.raises(NotFound):  # another project's client is not touched, live or not
        admin.delete_client(DeleteClient(project_id=acme.project.id, client_id=other.client.client.client_id,
                                         actor=ACTOR, caller_permissions=ALL_SCOPES))
    assert not world.app.load(kept, Token).revoked


def test_a_client_of_another_project_is_not_found(world: World, admin: TokenAdmin) -> None:
    acme, other = world.sign_up("owner@acme.test"), world.sign_up("owner@other.test", project_name="Other")
    for client_id in (other.client.client.client_id, "kl_unknown"):
        with pytest.raises(NotFound):
            admin.delete_client(DeleteClient(project_id=acme.project.id, client_id=client_id, actor=ACTOR,
                                             caller_permissions=ALL_SCOPES))
    assert not world.app.load(client_aggregate_id(other.client.client.client_id), Client).revoked


def test_a_revocation_larger_than_the_group_commit_limit_is_saved_on_its_own_in_one_transaction(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the limit the tokens are not handed to the group committer (its thread issues every token of the
    process): one transaction of their own, still all of them or none."""
    acme = world.sign_up("owner@acme.test")
    ids = [issue(world, acme) for _ in range(3)]

    def group_commit(*aggregates: Any, **kwargs: Any) -> int:
        raise AssertionError("a revocation past the limit went to the group committer")

    revoker = replace(world.tokens.revoker, save=group_commit, group_commit_limit=2)
    admin = TokenAdmin(app=world.app, revoker=revoker, index=revoker.index)
    counter = SaveCounter(world, monkeypatch)
    assert admin.delete_client(DeleteClient(project_id=acme.project.id, client_id=acme.client.client.client_id,
                                            actor=ACTOR, caller_permissions=ALL_SCOPES)) == 3
    assert counter.calls == 1
    assert all(world.app.load(token_id, Token).revoked for token_id in ids)
    assert world.app.load(client_aggregate_id(acme.client.client.client_id), Client).revoked


class LaggingIndex:
    """The token lookup model after a large transaction: it needs longer than a request's wait to catch up."""

    def __init__(self, index: Any, needs: float) -> None:
        self._index, self._needs = index, needs

    def wait_for(self, position: int, timeout: float = 5.0) -> None:
        if timeout < self._needs:
            raise TimeoutError("the model did not catch up in time")
        self._index.wait_for(position, timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._index, name)


def test_a_bulk_command_waits_longer_than_a_request_for_the_model_to_catch_up(world: World) -> None:
    """A deletion's late pass follows its own transaction of all the client's tokens: with 60,000 of them the
    model took longer than a request's 5 s to apply it, and the command answered 503 with the work done."""
    acme = world.sign_up("owner@acme.test")
    issue(world, acme)
    lagging = LaggingIndex(world.tokens.revoker.index, needs=30)
    revoker = replace(world.tokens.revoker, index=lagging)
    admin = TokenAdmin(app=world.app, revoker=revoker, index=lagging)
    assert admin.revoke_tokens(RevokeTokens(project_id=acme.project.id, actor=ACTOR,
                                            client_id=acme.client.client.client_id)) == 1
    issue(world, acme)
    assert admin.delete_client(DeleteClient(project_id=acme.project.id, client_id=acme.client.client.client_id,
                                            actor=ACTOR, caller_permissions=ALL_SCOPES)) == 1


def test_a_caller_deletes_only_a_client_whose_scope_it_holds(world: World, admin: TokenAdmin) -> None:
    """A developer (``clients:write``) must not destroy an owner's broader key, as it may not rotate one."""
    acme = world.sign_up("owner@acme.test")
    token_id = issue(world, acme)
    client = acme.client.client
    withheld = sorted(client.scopes)[-1]
    lacking = frozenset(client.scopes) - {withheld}
    with pytest.raises(Forbidden, match=withheld):
        admin.delete_client(DeleteClient(project_id=acme.project.id, client_id=client.client_id, actor=ACTOR,
                                         caller_permissions=lacking))
    assert not world.app.load(client_aggregate_id(client.client_id), Client).revoked
    assert not world.app.load(token_id, Token).revoked
    assert admin.delete_client(DeleteClient(project_id=acme.project.id, client_id=client.client_id, actor=ACTOR,
                                            caller_permissions=frozenset(client.scopes))) == 1
    assert world.app.load(client_aggregate_id(client.client_id), Client).revoked

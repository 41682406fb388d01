"""A revocation past the group commit's limit, in a transaction of its own, when its save conflicts
(``Revoker._revoke_alone``): only what moved is decided again, on the in-memory store. The limit is 2 tokens here
instead of 1,000. The same on real PostgreSQL: tests/integration/test_large_revocation_races.py."""

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest

from application.accounts import SignedUp
from application.oauth import revocation
from application.oauth.grants import TokenRequest
from application.oauth.tokens import IssuedTokens
from application.token_admin import DeleteClient, TokenAdmin
from domain.client import Client
from domain.ids import client_aggregate_id
from domain.scopes import ALL_SCOPES
from domain.token import Token
from tests.unit.conftest import PASSWORD, World
from tests.unit.test_token_admin import ACTOR, issue

EMAIL = "ada@example.test"
REAL_LOAD = revocation.load_tokens


def limited(world: World) -> revocation.Revoker:
    return replace(world.tokens.revoker, group_commit_limit=2)


def on_first_load(monkeypatch: pytest.MonkeyPatch, race: Callable[[], Any] = lambda: None) -> list[int]:
    """Runs ``race`` once, right after the first load of the revocation's tokens; returns each load's size."""
    loads: list[int] = []

    def loading(app: Any, ids: Sequence[UUID], *, follow_children: bool,
                generations: int | None = None) -> dict[UUID, Token]:
        loaded = REAL_LOAD(app, ids, follow_children=follow_children, generations=generations)
        loads.append(len(ids))
        if len(loads) == 1:
            race()
        return loaded

    monkeypatch.setattr(revocation, "load_tokens", loading)
    return loads


def before_saves(world: World, monkeypatch: pytest.MonkeyPatch, race: Callable[[], bool]) -> None:
    """Runs ``race`` before each save of the revocation (more than two objects), while it answers True."""
    save = world.app.save
    racing = [True]

    def saving(*objs: Any, **kwargs: Any) -> Any:
        if len(objs) > 2 and racing[0]:
            racing[0] = race()
        return save(*objs, **kwargs)

    monkeypatch.setattr(world.app, "save", saving)


def refresh(world: World, refresh_token: str | None) -> IssuedTokens:
    return world.tokens.handle(TokenRequest(grant_type="refresh_token", client_id="dashboard",
                                            refresh_token=refresh_token))


def test_a_deletion_whose_client_changed_meanwhile_is_saved_on_the_client_as_it_is_now(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The conflict is the client's alone (its secret rotated): no token is loaded again, and the ``ClientRevoked``
    is decided again on the rotated client (the failed save consumed the first one)."""
    acme = world.sign_up("owner@acme.test")
    ids = [issue(world, acme) for _ in range(3)]
    client_id = acme.client.client.client_id

    def rotate() -> bool:
        client = world.app.load(client_aggregate_id(client_id), Client)
        now = world.clock.now()
        client.rotate_secret(secret_hash="0" * 64, secret_hint="abcd", secret_expires_at=now + timedelta(days=90),
                             previous_secret_expires_at=now, actor=ACTOR)
        world.app.save(client)
        return False  # once

    loads = on_first_load(monkeypatch)
    before_saves(world, monkeypatch, rotate)
    admin = TokenAdmin(app=world.app, revoker=limited(world), index=world.tokens.revoker.index)
    assert admin.delete_client(DeleteClient(project_id=acme.project.id, client_id=client_id, actor=ACTOR,
                                            caller_permissions=ALL_SCOPES)) == 3
    assert loads[:2] == [3, 0]  # the tokens once; none of them moved
    events = list(world.app.events.get(client_aggregate_id(client_id)))
    assert [type(e).__name__ for e in events[-2:]] == ["ClientSecretRotated", "ClientRevoked"]
    assert all(world.app.load(token_id, Token).revoked for token_id in ids)


@pytest.fixture
def ada(world: World) -> SignedUp:
    return world.sign_up(EMAIL)


def test_a_refresh_token_rotated_while_its_family_is_decided_takes_its_new_pair_with_it(
        world: World, ada: SignedUp, monkeypatch: pytest.MonkeyPatch) -> None:
    """A family of three live tokens (a login, then a rotation) revoked from its live refresh token, which a
    racing refresh rotates while the revocation loads: the save conflicts on that token alone, and deciding it
    again follows its stream to the pair the rotation issued."""
    login = world.tokens.handle(TokenRequest(grant_type="password", client_id="dashboard", username=EMAIL,
                                             password=PASSWORD))
    second = refresh(world, login.refresh_token)
    rotations: list[IssuedTokens] = []
    loads = on_first_load(monkeypatch, lambda: rotations.append(refresh(world, second.refresh_token)))
    presented = world.app.load(second.aggregates[0].id, Token)
    revoked = limited(world).revoke_family(presented.family_id, reason="revoked by client",
                                           actor="client:dashboard", presented=presented)
    third = rotations[0]
    assert loads[1] == 1  # after the first load, only the rotated token
    assert revoked == 5  # the login's and the rotation's access tokens, the rotated token, and the new pair
    ended = {t.id for t in (*login.aggregates, *second.aggregates, *third.aggregates)
             if world.app.load(t.id, Token).revoked}
    pairs = (*second.aggregates[:2], *third.aggregates[:2])  # a rotation's aggregates: its pair, then the used token
    assert ended == {t.id for t in pairs} | {login.aggregates[0].id}
    assert world.app.load(login.aggregates[1].id, Token).used  # the login's refresh token stays used


def test_a_revocation_whose_tokens_move_before_every_save_gives_up_having_recorded_nothing(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never half-done: after ``ATTEMPTS`` conflicts the deletion raises, and the client was not revoked."""
    acme = world.sign_up("owner@acme.test")
    ids = [issue(world, acme) for _ in range(revocation.ATTEMPTS + 4)]
    client_id = acme.client.client.client_id

    def revoke_one_more() -> bool:  # as the client would, right before the revocation's save
        token = next(t for t in (world.app.load(i, Token) for i in ids) if not t.revoked)
        token.revoke(reason="revoked by client", actor=f"client:{client_id}")
        world.app.save(token)
        return True

    before_saves(world, monkeypatch, revoke_one_more)
    admin = TokenAdmin(app=world.app, revoker=limited(world), index=world.tokens.revoker.index)
    with pytest.raises(TimeoutError):
        admin.delete_client(DeleteClient(project_id=acme.project.id, client_id=client_id, actor=ACTOR,
                                         caller_permissions=ALL_SCOPES))
    assert not world.app.load(client_aggregate_id(client_id), Client).revoked
    assert sum(world.app.load(i, Token).revoked for i in ids) == revocation.ATTEMPTS  # the racer's, no more

"""A family's revocation racing a rotation of one of its refresh tokens.

The revocation selects the family's live tokens on the token lookup index; a refresh that commits right after that
selection uses up a selected refresh token and issues a new pair the selection lacks. The fake index below commits
such a refresh at exactly that moment (what a concurrent request does in a server), so both races are
deterministic: an RFC 7009 revocation of the refresh token, and a reuse detection racing the legitimate holder's
rotation. Either way the rotated pair must end up revoked with the rest of the family.
"""

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any
from uuid import UUID

import pytest

from application.oauth.errors import InvalidGrant
from application.oauth.grants import TokenRequest
from application.oauth.tokens import IssuedTokens
from domain.errors import InvariantViolated
from domain.token import Token, TokenKind
from tests.unit.conftest import PASSWORD, World

EMAIL = "ada@example.test"


class RotatingIndex:
    """The world's index, but ``rotate`` runs once right after the first family selection is read."""

    def __init__(self, inner: Any, rotate: Callable[[], Any]) -> None:
        self._inner = inner
        self._rotate: Callable[[], Any] | None = rotate

    def live_in_family(self, family_id: Any) -> list[Any]:
        return self._after(self._inner.live_in_family(family_id))

    def families_as_of(self, token_ids: Sequence[Any]) -> dict[Any, Any]:
        return self._after(self._inner.families_as_of(token_ids))

    def _after(self, selected: Any) -> Any:
        if self._rotate is not None:
            rotate, self._rotate = self._rotate, None
            rotate()
        return selected

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def login(world: World) -> IssuedTokens:
    return world.tokens.handle(TokenRequest(grant_type="password", client_id="dashboard", username=EMAIL,
                                            password=PASSWORD))


def refresh(world: World, refresh_token: str | None) -> IssuedTokens:
    return world.tokens.handle(TokenRequest(grant_type="refresh_token", client_id="dashboard",
                                            refresh_token=refresh_token))


def racing(world: World, rotate: Callable[[], Any]) -> World:
    """The world, with its token endpoint's revoker selecting through a ``RotatingIndex``."""
    revoker = replace(world.tokens.revoker, index=RotatingIndex(world.tokens.revoker.index, rotate))
    return replace(world, tokens=replace(world.tokens, revoker=revoker))


def family_of(world: World, issued: IssuedTokens) -> list[Token]:
    family_id = issued.aggregates[0].family_id
    return [t for t in world.tokens.revoker.index._tokens() if t.family_id == family_id]


def new_pair(issued: IssuedTokens) -> set[UUID]:
    """The ids of the pair a refresh issued (its aggregates: the new refresh, the new access, the used token)."""
    return {issued.aggregates[0].id, issued.aggregates[1].id}


def test_a_login_saves_its_access_token_before_its_refresh_token(world: World) -> None:
    """A family revoked from its login's refresh token finds the login's access token only on the token index (it
    is nobody's child); the index holds it whenever it holds the refresh token only if it was stored first."""
    world.sign_up(EMAIL)
    before = world.position()
    issued = login(world)
    assert [t.kind for t in issued.aggregates] == [TokenKind.ACCESS, TokenKind.REFRESH]
    stored = [n.originator_id for n in world.app.recorder.select_notifications(start=before + 1, limit=10)]
    assert stored == [t.id for t in issued.aggregates]


@pytest.mark.parametrize("from_presented", [False, True], ids=["index at the head", "from the presented token"])
def test_revoking_a_refresh_token_also_revokes_the_pair_a_racing_refresh_rotated_it_into(world: World,
                                                                                         from_presented: bool) -> None:
    world.sign_up(EMAIL)
    issued = login(world)
    rotated: list[IssuedTokens] = []
    family_id = issued.aggregates[0].family_id
    assert family_id is not None
    presented = world.app.load(issued.aggregates[1].id, Token) if from_presented else None  # a logout's
    race = racing(world, lambda: rotated.append(refresh(world, issued.refresh_token)))

    revoked = race.tokens.revoker.revoke_family(family_id, reason="revoked by client", actor="client:dashboard",
                                                presented=presented)

    assert len(rotated) == 1  # the refresh committed between the selection and the revocation
    assert revoked == 4  # the login's pair and the rotated pair
    family = family_of(world, issued)
    assert len(family) == 4 and all(t.revoked for t in family)
    assert new_pair(rotated[0]) <= {t.id for t in family}
    with pytest.raises(InvalidGrant):
        refresh(world, rotated[0].refresh_token)


def test_reuse_detection_racing_the_legitimate_rotation_revokes_the_newest_pair(world: World) -> None:
    world.sign_up(EMAIL)
    issued = login(world)
    current = refresh(world, issued.refresh_token)  # the login's refresh token is now used up
    rotated: list[IssuedTokens] = []
    race = racing(world, lambda: rotated.append(refresh(world, current.refresh_token)))

    with pytest.raises(InvalidGrant):  # the stolen, used refresh token presented again
        race.tokens.handle(TokenRequest(grant_type="refresh_token", client_id="dashboard",
                                        refresh_token=issued.refresh_token))

    assert len(rotated) == 1  # the holder's refresh committed between the selection and the revocation
    family = family_of(world, issued)
    assert len(family) == 6
    newest = [t for t in family if t.id in new_pair(rotated[0])]
    assert len(newest) == 2 and all(t.revoked for t in newest)
    assert all(t.revoked or t.used for t in family)
    with pytest.raises(InvalidGrant):
        refresh(world, rotated[0].refresh_token)


class SaveTimedOut(TimeoutError):
    """A save whose outcome is unknown (the group commit's ``CommitTimeout`` is a ``TimeoutError`` too)."""


def test_only_a_lagging_index_sends_a_reuse_detection_to_the_streams(world: World) -> None:
    """A save that timed out may still commit: the detection answers it as before (a 503), and is not decided
    again on the streams, which is for an index that lags (``IndexLagging``)."""
    world.sign_up(EMAIL)
    session = login(world)
    refresh(world, session.refresh_token)
    saves: list[int] = []

    def timing_out(*objects: Any, **kwargs: Any) -> Any:
        saves.append(len(objects))
        raise SaveTimedOut("the group commit did not answer in time")

    endpoint = replace(world.tokens, revoker=replace(world.tokens.revoker, save=timing_out))
    with pytest.raises(SaveTimedOut):
        endpoint.handle(TokenRequest(grant_type="refresh_token", client_id="dashboard",
                                     refresh_token=session.refresh_token))
    assert len(saves) == 1


def test_only_a_logins_first_refresh_token_records_its_familys_end(world: World) -> None:
    world.sign_up(EMAIL)
    session = login(world)
    later = refresh(world, session.refresh_token)
    with pytest.raises(InvariantViolated):
        world.app.load(later.aggregates[0].id, Token).end_family(actor="system")
    root = world.app.load(session.aggregates[1].id, Token)
    root.end_family(actor="system")
    with pytest.raises(InvariantViolated):
        root.end_family(actor="system")

"""The logout benchmark's seeded logins (``benchmarks.seed_logins``) are real logins: each its own family, usable
for a refresh and revoked by a logout, as a password grant's; seeding for an unknown email writes nothing."""

import io
from types import SimpleNamespace
from typing import Any

import pytest
from eventsourcing.persistence import IntegrityError

from application.oauth.grants import TokenRequest
from application.oauth.revocation import RevocationRequest
from application.users import DisableUser, UserAdmin
from benchmarks.fixtures import SetupError
from benchmarks.seed_logins import _mint
from domain.client import DASHBOARD
from domain.ids import DASHBOARD_CLIENT_ID, refresh_token_aggregate_id
from domain.token import Token
from infrastructure.bootstrap import Container
from tests.integration.support import head, sign_up


def test_seeded_logins_rotate_and_log_out_as_password_logins_do(container: Container) -> None:
    account = sign_up(container)
    progress = io.StringIO()

    first, second = _mint(container, [account.user.email] * 2, progress=progress, label="seeding")

    assert "2/2 seeded" in progress.getvalue()
    tokens = [container.app.load(refresh_token_aggregate_id(container.tokens.secrets.hash(t)), Token)
              for t in (first, second)]
    assert tokens[0].family_id != tokens[1].family_id
    assert {t.user_id for t in tokens} == {account.user.id}
    rotated = container.tokens.handle(TokenRequest(grant_type="refresh_token", client_id=DASHBOARD_CLIENT_ID,
                                                   refresh_token=first))
    assert rotated.refresh_token
    container.revocation.handle(DASHBOARD, RevocationRequest(token=second, token_type_hint="refresh_token"))
    assert not container.app.load(tokens[1].id, Token).is_live(container.clock.now())
    assert container.app.load(tokens[0].id, Token).used


def test_seeding_for_an_email_of_no_account_writes_nothing(container: Container) -> None:
    account = sign_up(container)
    before = head(container)

    with pytest.raises(SetupError, match="no account"):
        _mint(container, [account.user.email, "nobody@example.test"], progress=io.StringIO(), label="seeding")

    assert head(container) == before


def test_seeding_for_a_disabled_account_is_refused(container: Container) -> None:
    account = sign_up(container)
    UserAdmin(app=container.app, revoker=container.revoker, index=container.lookup).disable_user(
        DisableUser(email=account.user.email))

    with pytest.raises(SetupError, match="disabled"):
        _mint(container, [account.user.email], progress=io.StringIO(), label="seeding")


class _StaleAccounts:
    """The token endpoint, but finding each account as it was before the test changed it."""

    def __init__(self, endpoint: Any, stale: Any) -> None:
        self._endpoint, self._stale = endpoint, stale

    def find_user(self, email: str) -> Any:
        return self._stale

    def __getattr__(self, name: str) -> Any:
        return getattr(self._endpoint, name)


def test_seeded_logins_are_saved_guarded_by_the_account_as_read(container: Container) -> None:
    """As the password grant's: an account disabled after it was read gets no login saved."""
    account = sign_up(container)
    stale = container.tokens.find_user(account.user.email)
    UserAdmin(app=container.app, revoker=container.revoker, index=container.lookup).disable_user(
        DisableUser(email=account.user.email))
    before = head(container)
    world = SimpleNamespace(tokens=_StaleAccounts(container.tokens, stale), app=container.app)

    with pytest.raises(IntegrityError):
        _mint(world, [account.user.email], progress=io.StringIO(), label="seeding")  # type: ignore[arg-type]

    assert head(container) == before

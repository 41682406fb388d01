"""The operator disabling an account (``application.users``) on real PostgreSQL: a login or a refresh decided
before the account was disabled issues nothing after it (its save is guarded by the version of the user's stream its
decision read), and the account's tokens are listed as revoked when the command returns."""

from typing import Any

import pytest
from eventsourcing.persistence import IntegrityError

from application.oauth.errors import InvalidGrant
from application.oauth.grants import TokenRequest
from application.oauth.tokens import TokenMint
from application.users import Disabled, DisableUser, UserAdmin
from domain.token import Token
from domain.user import User
from infrastructure.bootstrap import Container
from tests.integration.support import PASSWORD, fresh_email, sign_up

pytestmark = pytest.mark.integration


def admin(container: Container) -> UserAdmin:
    return UserAdmin(app=container.app, revoker=container.revoker, index=container.lookup)


def login(email: str) -> TokenRequest:
    return TokenRequest(grant_type="password", client_id="dashboard", username=email, password=PASSWORD)


def test_a_login_decided_before_the_account_was_disabled_issues_nothing_after_it(container: Container) -> None:
    email = fresh_email()
    sign_up(container, email)
    decided = container.tokens.decide(login(email))  # the password checked, the account not yet disabled
    admin(container).disable_user(DisableUser(email=email))
    with pytest.raises(IntegrityError):
        container.app.save(*decided.aggregates, guards=decided.guards)
    assert all(container.app.find(t.id, Token) is None for t in decided.aggregates)


def test_the_accounts_tokens_are_refused_everywhere_once_it_is_disabled(container: Container) -> None:
    email = fresh_email()
    sign_up(container, email)
    issued = container.tokens.handle(login(email))
    assert admin(container).disable_user(DisableUser(email=email)) == Disabled(newly=True, revoked=2)
    # Listed as revoked: the gate of every process refuses them, whether or not the token lookup model applied it.
    assert all(container.lookup.is_revoked(t.id) for t in issued.aggregates)


def disable_on_next_mint(container: Container, monkeypatch: pytest.MonkeyPatch, user_id: Any) -> None:
    """The account is disabled while the next login or refresh is decided: after the account is checked and before
    the refresh token is minted, another request of this process fast-forwards the cached user to ``UserDisabled``."""
    mint = TokenMint.refresh_token
    done: list[bool] = []

    def minting(self: TokenMint, *args: Any, **kwargs: Any) -> Any:
        if not done:
            done.append(True)
            user = container.app.load(user_id, User)
            user.disable(actor="operator")
            container.app.save(user)
            container.app.find(user_id, User, copy=False)  # the cached instance, fast-forwarded in place
        return mint(self, *args, **kwargs)

    monkeypatch.setattr(TokenMint, "refresh_token", minting)


@pytest.fixture
def disabled_mid_login(container: Container, monkeypatch: pytest.MonkeyPatch) -> str:
    email = fresh_email()
    disable_on_next_mint(container, monkeypatch, sign_up(container, email).user.id)
    return email


@pytest.fixture
def disabled_mid_refresh(container: Container, monkeypatch: pytest.MonkeyPatch) -> TokenRequest:
    email = fresh_email()
    signed = sign_up(container, email)
    issued = container.tokens.handle(login(email))
    disable_on_next_mint(container, monkeypatch, signed.user.id)
    return TokenRequest(grant_type="refresh_token", client_id="dashboard", refresh_token=issued.refresh_token)


def test_a_login_is_guarded_by_the_version_its_decision_saw_not_a_later_one(container: Container,
                                                                            disabled_mid_login: str) -> None:
    decided = container.tokens.decide(login(disabled_mid_login))
    with pytest.raises(IntegrityError):
        container.app.save(*decided.aggregates, guards=decided.guards)


def test_a_login_whose_account_was_disabled_meanwhile_is_decided_again_and_refused(
        container: Container, disabled_mid_login: str) -> None:
    with pytest.raises(InvalidGrant):
        container.tokens.handle(login(disabled_mid_login))


def test_a_refresh_decided_before_its_account_was_disabled_issues_nothing_after(
        container: Container, disabled_mid_refresh: TokenRequest) -> None:
    """Even when its refresh token is never revoked (it expired meanwhile, say, so no pass selects it): the save is
    guarded by the user's stream, not only by the refresh token's."""
    decided = container.tokens.decide(disabled_mid_refresh)
    with pytest.raises(IntegrityError):
        container.app.save(*decided.aggregates, guards=decided.guards)


def test_a_refresh_whose_account_was_disabled_meanwhile_is_decided_again_and_refused(
        container: Container, disabled_mid_refresh: TokenRequest) -> None:
    with pytest.raises(InvalidGrant):
        container.tokens.handle(disabled_mid_refresh)

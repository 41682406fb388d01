"""The operator disabling an account (``application.users``) on real PostgreSQL: a login decided before the account
was disabled issues nothing after it (its save is guarded by the user's stream version), and the account's tokens are
listed as revoked in the transaction that disables it."""

import pytest
from eventsourcing.persistence import IntegrityError

from application.oauth.grants import TokenRequest
from application.users import DisableUser, UserAdmin
from domain.token import Token
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
    assert admin(container).disable_user(DisableUser(email=email)) == 2
    # Listed in the transaction that disabled the account: the gate of every process refuses them at once, without
    # waiting for the token lookup model.
    assert all(container.lookup.is_revoked(t.id) for t in issued.aggregates)

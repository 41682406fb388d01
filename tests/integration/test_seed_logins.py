"""The logout benchmark's seeded logins (``benchmarks.seed_logins``) are real logins: each its own family, usable
for a refresh and revoked by a logout, as a password grant's; seeding for an unknown email writes nothing."""

import io

import pytest

from application.oauth.grants import TokenRequest
from application.oauth.revocation import RevocationRequest
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

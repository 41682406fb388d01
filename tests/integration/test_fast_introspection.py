"""Introspection on the event loop (``infrastructure.http.introspection``) against the real store and Redis: it
answers exactly what the general path answers, and hands back to it whenever anything is not known to be in order."""



from application.clients import RotateSecret
from application.oauth.grants import TokenRequest
from application.oauth.limits import client_keys
from application.oauth.revocation import RevocationRequest
from domain.scopes import ALL_SCOPES
from infrastructure.bootstrap import Container
from infrastructure.http.introspection import INACTIVE
from tests.integration.fast_support import SOURCE, Harness, client_token
from tests.integration.support import PASSWORD, sign_up


def test_an_unknown_secret_is_left_to_the_general_path(harness: Harness, container: Container) -> None:
    account = sign_up(container)
    assert harness.answer(account, client_token(container, account)) is None


def test_a_known_client_gets_what_the_general_path_answers(harness: Harness, container: Container) -> None:
    account = sign_up(container)
    token = client_token(container, account)
    general = harness.general(account, token)
    assert general["active"] is True
    assert harness.answer(account, token) == general


def test_revoked_tokens_other_projects_and_garbage_are_inactive(harness: Harness, container: Container) -> None:
    account, other = sign_up(container), sign_up(container, project="B")
    token, foreign = client_token(container, account), client_token(container, other)
    harness.general(account, token)
    assert harness.answer(account, foreign) == INACTIVE
    assert harness.answer(account, "not-a-token") == INACTIVE
    container.revocation.handle(account.client.client, RevocationRequest(token=token, token_type_hint=None))
    assert harness.answer(account, token) == INACTIVE == harness.general(account, token)


def test_a_changed_client_or_a_wrong_secret_goes_back_to_the_general_path(harness: Harness,
                                                                          container: Container) -> None:
    account = sign_up(container)
    token = client_token(container, account)
    harness.general(account, token)
    assert harness.answer(account, token, secret=account.client.client_secret[:-4] + "AAAA") is None
    container.clients.rotate(RotateSecret(project_id=account.project.id,
                                                 client_id=account.client.client.client_id, grace_period=0,
                                                 actor=f"user:{account.user.id}", caller_permissions=ALL_SCOPES))
    assert harness.answer(account, token) is None  # the stream moved on: the copy is stale


def test_counted_failures_go_back_to_the_general_path(harness: Harness, container: Container) -> None:
    account = sign_up(container)
    token = client_token(container, account)
    harness.general(account, token)
    limiter = container.tokens.limiter
    key = client_keys(account.client.client.client_id, SOURCE)[0]
    limiter.reserve([key])  # one failure counted against the client from the harness's address
    try:
        assert harness.answer(account, token) is None
    finally:
        limiter.release([key], reset=(key,))
    assert harness.answer(account, token) is not None


def test_refresh_and_dashboard_tokens_are_left_to_the_general_path(harness: Harness, container: Container) -> None:
    account = sign_up(container)
    harness.general(account, client_token(container, account))
    login = container.tokens.handle(TokenRequest(grant_type="password", client_id="dashboard",
                                                 username=account.user.email, password=PASSWORD))
    assert harness.answer(account, login.refresh_token) is None
    assert harness.answer(account, login.access_token) is None
    assert harness.general(account, login.refresh_token)["active"] is True

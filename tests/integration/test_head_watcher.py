"""The head watcher against the real store: by topic, only the read models with something to apply are woken;
the others are current up to the head at once (their in-process waiters go on without a pass)."""

from application.oauth.grants import TokenRequest
from infrastructure.bootstrap import Container
from projections.base import HeadWatcher
from tests.integration.support import head, sign_up


def caught_up(container: Container) -> None:
    for name, view in container.views.items():
        container.runner(name).catch_up()
        view.observe(view.position())
        view.wake.clear()


def test_by_topic_only_models_with_new_events_are_woken(quiet_container: Container) -> None:
    container, views = quiet_container, quiet_container.views
    account = sign_up(container)
    caught_up(container)
    before = head(container)
    container.tokens.handle(TokenRequest(grant_type="client_credentials", client_id=account.client.client.client_id,
                                         client_secret=account.client.client_secret))
    assert head(container) > before  # a TokenIssued: only the token lookup and the audit ledger apply it

    HeadWatcher(container.app.recorder, list(views.values()), by_topic=True).poll()
    assert {name for name, view in views.items() if view.wake.is_set()} == {"token_lookup", "audit"}
    assert views["members"].seen == views["clients"].seen == head(container)  # current there, with no pass
    assert views["token_lookup"].seen < head(container)


def test_without_topics_every_model_behind_is_woken(quiet_container: Container) -> None:
    container, views = quiet_container, quiet_container.views
    account = sign_up(container)
    caught_up(container)
    container.tokens.handle(TokenRequest(grant_type="client_credentials", client_id=account.client.client.client_id,
                                         client_secret=account.client.client_secret))
    HeadWatcher(container.app.recorder, list(views.values()), by_topic=False).poll()
    assert all(view.wake.is_set() for view in views.values())

"""The head watcher against the real store: by topic, only the read models with something to apply are woken;
the others are current up to the head at once (their in-process waiters go on without a pass)."""

import threading

from application.oauth.grants import TokenRequest
from infrastructure.bootstrap import TOKEN_RATE_MODELS, Container
from projections.base import HeadWatcher, ProjectionRunner
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


def test_models_other_processes_wait_on_pass_on_their_own_rhythm_with_no_head_poll(
        quiet_container: Container) -> None:
    """The supervisor's token lookup and audit ledger (``serve --workers 2``): their runners pass and write their
    position every ``REMOTE_IDLE_WRITE`` seconds by themselves (sooner after a pass that applied events); a head poll
    beside them woke them between those passes and made every pass, a durable commit, about 60% more frequent under
    load for no fresher position."""
    container = quiet_container
    account = sign_up(container)
    container.tokens.handle(TokenRequest(grant_type="client_credentials", client_id=account.client.client.client_id,
                                         client_secret=account.client.client_secret))
    target = head(container)
    container.start_projections(TOKEN_RATE_MODELS, remote_waiters=True)
    try:
        assert container.head_watcher is None
        for name in TOKEN_RATE_MODELS:
            view = container.views[name]
            view.runner_active = False  # wait as another process does: on the position the runner writes
            view.wait_for(target, timeout=10)
            assert view.position() >= target
    finally:
        # The container is the module's: runners left going would wait on the models' wake-ups of later tests
        # (the busy-interval test below records every wait on the token lookup model's).
        for runner in container.runners:
            runner.stop()
        container.runners.clear()


def test_a_runner_behind_by_more_than_a_batch_goes_on_without_waiting_its_interval(
        quiet_container: Container) -> None:
    """A runner that applied a full batch short of the head takes the next at once. Waiting its interval after each
    batch capped it at a batch per interval (500 events each 50 ms in the supervisor), less than a busy store
    appends: under sustained token traffic its lag only grew."""
    container = quiet_container
    account = sign_up(container)
    for _ in range(3):
        container.tokens.handle(TokenRequest(grant_type="client_credentials",
                                             client_id=account.client.client.client_id,
                                             client_secret=account.client.client_secret))
    target = head(container)
    view = container.lookup
    runner = ProjectionRunner(recorder=container.app.recorder, mapper=container.app.mapper, model=view,
                              batch_size=1, interval=3600, idle_write_interval=3600)
    runner.start()
    try:
        view.wait_for(target, timeout=10)  # wakes the runner once; a batch per interval would take hours
    finally:
        runner.stop()
    assert view.position() >= target


class _RecordingWake(threading.Event):
    """A model's wake-up that records each wait of its runner: the first returns at once, the second lasts until the
    runner stops."""

    def __init__(self) -> None:
        super().__init__()
        self.timeouts: list[float | None] = []
        self.second = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        self.timeouts.append(timeout)
        if len(self.timeouts) == 1:
            return True
        self.second.set()
        return super().wait()


def test_a_runner_that_applied_events_passes_again_after_its_busy_interval_and_idles_at_its_interval(
        quiet_container: Container) -> None:
    """The supervisor's models pass again 10 ms after a pass that applied events (a burst of 50 ms of revocations
    took a core from the API processes), and every 50 ms when idle, as before (no more queries for an idle store)."""
    container = quiet_container
    account = sign_up(container)
    container.tokens.handle(TokenRequest(grant_type="client_credentials", client_id=account.client.client.client_id,
                                         client_secret=account.client.client_secret))
    view = container.lookup
    view.reset()
    wake, view.wake = view.wake, _RecordingWake()
    runner = ProjectionRunner(recorder=container.app.recorder, mapper=container.app.mapper, model=view,
                              interval=3600, idle_write_interval=3600, busy_interval=0.25)
    try:
        runner.start()
        assert view.wake.second.wait(timeout=10)
    finally:
        runner.stop()
        recorded, view.wake = view.wake, wake
    assert recorded.timeouts == [0.25, 3600]  # after the pass that applied the token, then after an idle one
    assert view.position() == head(container)

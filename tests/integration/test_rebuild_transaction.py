"""A rebuild is one transaction, idle while the next page is read on another connection: on a large store a page
of a model with few events of its own takes longer to find than the pool lets a transaction sit idle, and the
rebuild must not be ended by that timeout. A rebuild and a catch-up end at the store's head as they found it, however
busy the store is meanwhile."""

import time
from collections.abc import Iterator
from typing import Any

from application.oauth.grants import TokenRequest
from infrastructure.bootstrap import Container
from projections.base import REPLAYING, ProjectionRunner, RebuildProgress
from tests.integration.support import head, sign_up


def test_a_rebuild_outlasts_the_pools_idle_in_transaction_timeout(quiet_container: Container) -> None:
    view = quiet_container.members
    with view.datastore.get_connection() as conn:
        row = conn.execute("SELECT setting::int AS ms FROM pg_settings "
                           "WHERE name = 'idle_in_transaction_session_timeout'").fetchone()
    idle_seconds = row["ms"] / 1000  # type: ignore[index]
    assert idle_seconds > 0  # the pool's sessions do time idle transactions out

    def slow_pages() -> Iterator[tuple[list[Any], int, int]]:
        yield [], 1, 2
        time.sleep(idle_seconds + 1)  # the next page takes longer to read than a transaction may idle
        yield [], 2, 2

    assert view.rebuild(slow_pages()) == 2
    assert view.position() == 2
    quiet_container.runner(view.name).rebuild()  # back to the store's content for the module's other tests


def test_a_rebuild_under_steady_traffic_ends_at_the_head_it_found(quiet_container: Container) -> None:
    """Events recorded while a rebuild replays (here: a sign-up after every page, as a busy store records them) are
    left to the live runners once it has committed; a rebuild that chased the head never ended under traffic."""
    sign_up(quiet_container)
    runner = quiet_container.runner("members")
    found = head(quiet_container)
    pages: list[int] = []

    def busy_store(step: RebuildProgress) -> None:
        if step.phase == REPLAYING and len(pages) < 20:  # bounded, so that a rebuild chasing the head still ends
            pages.append(step.position)
            sign_up(quiet_container)

    assert runner.rebuild(busy_store) == found
    assert pages == [found]
    assert head(quiet_container) > found  # recorded meanwhile, applied by the runners from here
    runner.catch_up()
    assert runner.model.position() == head(quiet_container)


def test_catching_up_under_steady_traffic_ends_at_the_head_it_found(quiet_container: Container) -> None:
    """A job that catches a model up (the webhook dispatcher, every second) stops at the head it found on entry; one
    that stopped only when a pass found nothing new spun under traffic until its time limit."""
    runner = quiet_container.runner("members")
    runner.catch_up()
    sign_up(quiet_container)
    passes: list[int] = []

    def busy_store(total: int) -> None:
        if len(passes) < 20:
            passes.append(total)
            sign_up(quiet_container)

    runner.catch_up(busy_store)
    assert len(passes) == 1
    assert runner.model.seen < head(quiet_container)  # what was recorded meanwhile is the next catch-up's


def test_a_catch_up_whose_last_pass_had_none_of_the_models_events_writes_its_position(
        quiet_container: Container) -> None:
    """A pass with none of the model's events only notes the head in memory when the position was written less than
    its idle interval ago; a catch-up ends with it written, for what reads the position next (``audit verify``)."""
    model = quiet_container.members
    runner = ProjectionRunner(recorder=quiet_container.app.recorder, mapper=quiet_container.app.mapper, model=model,
                              idle_write_interval=3600)
    runner.catch_up()
    account = sign_up(quiet_container)
    runner.catch_up()  # the sign-up's member: written now
    quiet_container.tokens.handle(TokenRequest(grant_type="client_credentials",  # no event of the members model
                                               client_id=account.client.client.client_id,
                                               client_secret=account.client.client_secret))
    assert runner.catch_up() > 0
    assert model.position() == head(quiet_container)

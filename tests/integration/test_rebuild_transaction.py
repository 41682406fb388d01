"""A rebuild is one transaction, idle while the next page is read on another connection: on a large store a page
of a model with few events of its own takes longer to find than the pool lets a transaction sit idle, and the
rebuild must not be ended by that timeout. A rebuild and a catch-up end at the store's head as they found it, however
busy the store is meanwhile."""

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from application.oauth.grants import TokenRequest
from infrastructure.bootstrap import Container
from infrastructure.postgres import STORE_CONNINFO
from projections import rebuild
from projections.base import ProjectionRunner
from projections.rebuild import LOCKING, REPLAYING, RebuildProgress
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


def test_a_rebuild_under_steady_traffic_ends_at_the_head_it_found_under_the_lock(quiet_container: Container) -> None:
    """Events recorded while a rebuild replays its last stretch (here: a sign-up after every page, as a busy store
    records them) are left to the live runners once it has committed; a rebuild that chased the head never ended
    under traffic."""
    sign_up(quiet_container)
    runner = quiet_container.runner("members")
    found: list[int] = []
    pages: list[int] = []

    def busy_store(step: RebuildProgress) -> None:
        if step.phase == LOCKING:
            found.append(head(quiet_container))
        elif step.phase == REPLAYING and found and len(pages) < 20:  # bounded: a rebuild chasing the head ends
            pages.append(step.position)
            sign_up(quiet_container)

    assert runner.rebuild(busy_store) == found[0]
    assert pages == [found[0]]
    assert head(quiet_container) > found[0]  # recorded meanwhile, applied by the runners from here
    runner.catch_up()
    assert runner.model.position() == head(quiet_container)


def test_the_live_runners_keep_applying_while_a_rebuild_replays(quiet_container: Container) -> None:
    """The replay runs beside the live tables without the model's lock: a runner applies what is recorded meanwhile
    (and reads waiting on it are answered), where it used to wait for the whole rebuild; the swap then keeps it."""
    runner = quiet_container.runner("members")
    runner.catch_up()
    replaying, resume = threading.Event(), threading.Event()

    def slow_pages(start: int, stop: int | None) -> Iterator[tuple[list[Any], int, int]]:
        for page in runner.pages(start, stop):
            yield page
            replaying.set()
            assert resume.wait(30)

    rebuilt: list[int] = []
    rebuilding = threading.Thread(target=lambda: rebuilt.append(runner.model.rebuild(slow_pages)))
    rebuilding.start()
    try:
        assert replaying.wait(30)
        account = sign_up(quiet_container)
        applying = threading.Thread(target=runner.catch_up)
        applying.start()
        applying.join(10)
        assert not applying.is_alive(), "the live runner waited on the rebuild"
        assert runner.model.position() == head(quiet_container)
        assert [m["project_id"] for m in runner.model.memberships(account.user.id)] == [str(account.project.id)]
    finally:
        resume.set()
        rebuilding.join(60)
    assert rebuilt == [head(quiet_container)]
    assert [m["project_id"] for m in runner.model.memberships(account.user.id)] == [str(account.project.id)]
    assert runner.run_once() == 0  # exactly once: nothing left to apply
    # The swapped-in table came with its row-level security policy: the tenant role still sees its project's rows.
    assert [row.user_id for row in runner.model.page(account.project.id, limit=10)] == [account.user.id]
    runner.rebuild()  # and again: each rebuild creates the policy anew, whatever the live table had
    assert [row.user_id for row in runner.model.page(account.project.id, limit=10)] == [account.user.id]
    with runner.model.datastore.get_connection() as conn:
        left = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'kl_rebuild_%'").fetchall()
    assert left == []  # nothing of the rebuild's own is left behind


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


def rebuild_in_thread(runner: ProjectionRunner, *, attempts: int) -> tuple[threading.Thread, list[Any]]:
    """A thread (not started) that rebuilds ``runner``'s model, and where it puts the position or the exception."""
    outcome: list[Any] = []

    def rebuild_it() -> None:
        try:
            outcome.append(runner.rebuild(attempts=attempts))
        except Exception as exc:
            outcome.append(exc)

    return threading.Thread(target=rebuild_it), outcome


def test_a_rebuild_gives_up_rather_than_queue_readers_behind_a_long_transaction(
        quiet_container: Container, monkeypatch: pytest.MonkeyPatch) -> None:
    """Readers queue behind a swap waiting for a live table, so a transaction holding one (a long export,
    ``pg_dump``) is waited for briefly: the attempt is rolled back, letting runners and readers go on, and tried
    again; past its attempts the rebuild gives up, leaving the live model and nothing else behind."""
    monkeypatch.setattr(rebuild, "SWAP_PAUSE", (0.05, 0.05))
    runner = quiet_container.runner("members")
    runner.catch_up()
    url = str(quiet_container.app.env[STORE_CONNINFO])
    rebuilding, outcome = rebuild_in_thread(runner, attempts=3)
    with psycopg.connect(url) as reader:
        reader.execute("SELECT count(*) FROM member_view")  # held until this transaction ends
        rebuilding.start()
        rebuilding.join(30)
        gave_up = not rebuilding.is_alive()
    rebuilding.join(60)
    assert gave_up, "the swap waited for the reader"
    assert len(outcome) == 1 and isinstance(outcome[0], rebuild.TablesInUse)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'kl_rebuild_%'").fetchall() == []
    assert runner.model.position() == head(quiet_container)
    assert runner.rebuild() == head(quiet_container)  # once the reader is gone


def test_a_rebuild_cancelled_by_an_operator_while_it_waits_for_the_tables_stops(
        quiet_container: Container, monkeypatch: pytest.MonkeyPatch) -> None:
    """``pg_cancel_backend`` on a rebuild waiting for the live tables stops it with the cancellation, rather than
    passing for the attempt's own time limit (which is judged by the time waited, whatever the message's language)
    and being tried again; nothing is changed."""
    monkeypatch.setattr(rebuild, "SWAP_LOCK_WAIT_MS", 20_000)  # ample time to find the wait and cancel it
    runner = quiet_container.runner("members")
    runner.catch_up()
    url = str(quiet_container.app.env[STORE_CONNINFO])
    rebuilding, outcome = rebuild_in_thread(runner, attempts=3)
    with psycopg.connect(url) as reader, psycopg.connect(url, autocommit=True) as operator:
        reader.execute("SELECT count(*) FROM member_view")  # a fresh transaction: the attempt is begun
        rebuilding.start()
        waiting: list[tuple[int]] = []
        deadline = time.monotonic() + 15
        while not waiting and time.monotonic() < deadline:
            waiting = operator.execute("SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                       "AND query LIKE 'LOCK TABLE%%member_view%%'").fetchall()
            time.sleep(0.01)
        assert waiting, "the rebuild never waited for the live table"
        operator.execute("SELECT pg_cancel_backend(%s)", (waiting[0][0],))
        rebuilding.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], Exception)
    assert not isinstance(outcome[0], rebuild.TablesInUse)
    assert isinstance(outcome[0].__cause__ or outcome[0], psycopg.errors.QueryCanceled)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'kl_rebuild_%'").fetchall() == []
    assert runner.model.position() == head(quiet_container)


def test_a_second_rebuild_of_a_model_is_refused_while_one_runs(quiet_container: Container) -> None:
    """Another rebuild of the model in progress (here, its key held by another session): refused at once, nothing
    created or changed; once it is done, a rebuild goes through."""
    runner = quiet_container.runner("members")
    runner.catch_up()
    url = str(quiet_container.app.env[STORE_CONNINFO])
    with psycopg.connect(url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (runner.model.lock_key(" rebuilding"),))
        with pytest.raises(rebuild.RebuildRunning, match="another rebuild"):
            runner.rebuild()
        assert other.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'kl_rebuild_%'").fetchall() == []
    assert runner.rebuild() == head(quiet_container)


def test_a_rebuild_tries_again_once_a_reader_lets_go_of_a_live_table(quiet_container: Container) -> None:
    """An attempt that could not have the live tables is rolled back and tried again after a pause, and reported;
    once the reader is gone the swap goes through."""
    runner = quiet_container.runner("members")
    runner.catch_up()
    phases: list[str] = []
    reading, release = threading.Event(), threading.Event()

    def read_for_a_while() -> None:
        with psycopg.connect(str(quiet_container.app.env[STORE_CONNINFO])) as reader:
            reader.execute("SELECT count(*) FROM member_view")  # held until this transaction ends
            reading.set()
            release.wait(30)

    def let_go_on_a_retry(step: RebuildProgress) -> None:
        phases.append(step.phase)
        if step.phase == rebuild.RETRYING:
            release.set()

    reader = threading.Thread(target=read_for_a_while)
    reader.start()
    try:
        assert reading.wait(30)
        assert runner.rebuild(let_go_on_a_retry) == head(quiet_container)
    finally:
        release.set()
        reader.join(30)
    assert rebuild.RETRYING in phases and phases[-1] == rebuild.COMMITTED


def test_only_a_long_transaction_other_than_the_models_runners_holds_the_swap_off(quiet_container: Container) -> None:
    """A runner's batch (holding the model's lock) is what an attempt's own lock waits out, however long it has run;
    another transaction that has held a live table for over a second makes the rebuild skip the attempt."""
    model = quiet_container.members
    url = str(quiet_container.app.env[STORE_CONNINFO])
    with psycopg.connect(url, row_factory=dict_row) as batch, psycopg.connect(url) as export:
        model.lock(batch.cursor())  # a runner's batch: the model's lock, then its table
        batch.execute("SELECT count(*) FROM member_view")
        time.sleep(1.2)  # both transactions are now over a second old
        with model.datastore.transaction(commit=False) as curs:
            assert rebuild._lock_wait(curs, model) == rebuild.SWAP_LOCK_WAIT_MS
        export.execute("SELECT count(*) FROM member_view")
        export.execute("SELECT pg_sleep(1.1)")
        with model.datastore.transaction(commit=False) as curs:
            assert rebuild._lock_wait(curs, model) is None

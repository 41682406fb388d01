"""The members read model: read-your-writes, exactly-once tracking and rebuild equivalence."""

import uuid
from typing import Any

import pytest
from eventsourcing.persistence import IntegrityError
from psycopg.sql import SQL

from application.oauth.grants import TokenRequest
from domain.project import Project
from domain.scopes import Role
from infrastructure.bootstrap import Container
from projections.base import ProjectionRunner
from projections.members import MembersView
from tests.integration.support import head, sign_up

pytestmark = pytest.mark.integration


def dump(view: MembersView) -> list[tuple[Any, ...]]:
    with view.datastore.get_connection() as conn, conn.cursor() as curs:
        curs.execute(SQL("SELECT project_id, user_id, role, since, email FROM {} ORDER BY project_id, user_id").format(
            view.table("member_view")))
        return [tuple(row.values()) for row in curs.fetchall()]


def populate(container: Container) -> None:
    """Every kind of event the model reads: created, added, role changed, removed."""
    alice, bob, carol = (sign_up(container, project=name) for name in ("A", "B", "C"))
    extra = container.accounts.create_project(name="Extra", owner_id=alice.user.id)
    project = container.app.load(extra.id, Project)
    project.add_member(user_id=bob.user.id, role=Role.DEVELOPER, actor=f"user:{alice.user.id}")
    project.add_member(user_id=carol.user.id, role=Role.AUDITOR, actor=f"user:{alice.user.id}")
    project.change_member_role(user_id=bob.user.id, role=Role.ADMIN, actor=f"user:{alice.user.id}")
    project.remove_member(user_id=carol.user.id, actor=f"user:{alice.user.id}")
    container.app.save(project)


def test_memberships_are_visible_after_waiting_for_the_head(container: Container) -> None:
    signed = sign_up(container)
    second = container.accounts.create_project(name="Second", owner_id=signed.user.id)
    container.members.wait_for(head(container))
    expected = sorted([{"project_id": str(signed.project.id), "role": "owner"},
                       {"project_id": str(second.id), "role": "owner"}], key=lambda m: m["project_id"])
    assert container.members.memberships(signed.user.id) == expected


def test_running_again_applies_nothing(container: Container) -> None:
    sign_up(container)
    container.members.wait_for(head(container))
    position, rows = container.members.position(), dump(container.members)
    runner = container.runner("members")
    assert runner.run_once() == 0
    assert runner.catch_up() == 0
    assert dump(container.members) == rows
    assert container.members.position() >= position


def test_rebuild_from_the_store_gives_the_same_table(quiet_container: Container) -> None:
    populate(quiet_container)
    view = quiet_container.members
    ProjectionRunner(recorder=quiet_container.app.recorder, mapper=quiet_container.app.mapper, model=view).catch_up()
    assert view.position() == head(quiet_container)
    before = dump(view)
    assert {row[2] for row in before} == {"owner", "admin"}, "the fixture did not exercise every event kind"
    assert all(row[4] and "@" in row[4] for row in before), "a member row lacks its user's email"

    view.reset()
    assert dump(view) == [] and view.position() == 0
    # A tiny batch size exercises the "full batch stops short of the head" path.
    small = ProjectionRunner(recorder=quiet_container.app.recorder, mapper=quiet_container.app.mapper, model=view,
                             batch_size=2)
    assert small.catch_up() == head(quiet_container)
    assert dump(view) == before
    assert view.position() == head(quiet_container)

    view.reset()
    quiet_container.runner("members").catch_up()
    assert dump(view) == before


def test_the_position_covers_events_the_model_ignores(quiet_container: Container) -> None:
    signed = sign_up(quiet_container)
    runner = ProjectionRunner(recorder=quiet_container.app.recorder, mapper=quiet_container.app.mapper,
                              model=quiet_container.members, idle_write_interval=0)
    runner.catch_up()
    rows = dump(quiet_container.members)
    quiet_container.tokens.handle(TokenRequest(grant_type="client_credentials",
                                               client_id=signed.client.client.client_id,
                                               client_secret=signed.client.client_secret))
    last = quiet_container.app.recorder.select_notifications(start=head(quiet_container), limit=1)[0]
    assert last.topic.endswith("Token.TokenIssued")
    assert runner.run_once() > 0
    assert quiet_container.members.position() == last.id, "waiting for a token's position would never return"
    assert dump(quiet_container.members) == rows


@pytest.mark.parametrize("behind", [0, 1])
def test_a_stale_position_is_refused_and_its_changes_rolled_back(quiet_container: Container, behind: int) -> None:
    view = quiet_container.members
    sign_up(quiet_container)
    quiet_container.runner("members").catch_up()
    position, rows = view.position(), dump(view)
    assert position > 1
    owner = uuid.uuid4()
    stray = Project(project_id=uuid.uuid4(), name="Replayed", owner_id=owner, actor=f"user:{owner}")
    with pytest.raises(IntegrityError):
        view.apply_batch(stray.collect_events(), position - behind)
    assert dump(view) == rows, "a batch at an old position changed the table"
    assert view.position() == position


def test_a_pass_with_nothing_of_the_models_moves_waiters_at_once_and_the_position_within_the_interval(
        quiet_container: Container) -> None:
    signed = sign_up(quiet_container)
    runner = ProjectionRunner(recorder=quiet_container.app.recorder, mapper=quiet_container.app.mapper,
                              model=quiet_container.members, idle_write_interval=3600)
    runner.catch_up()
    written = quiet_container.members.position()
    quiet_container.tokens.handle(TokenRequest(grant_type="client_credentials",
                                               client_id=signed.client.client.client_id,
                                               client_secret=signed.client.client_secret))
    assert runner.run_once() > 0
    assert quiet_container.members.seen == head(quiet_container)  # this process's waiters go on at once
    assert quiet_container.members.position() == written  # no transaction just to move the position
    eager = ProjectionRunner(recorder=quiet_container.app.recorder, mapper=quiet_container.app.mapper,
                             model=quiet_container.members, idle_write_interval=0)
    eager.run_once()
    assert quiet_container.members.position() == head(quiet_container)


def test_a_batch_commits_durably(quiet_container: Container, monkeypatch: pytest.MonkeyPatch) -> None:
    """An asynchronous commit would leave the batch's WAL for the event store's next commit to flush, under the
    store's table lock."""
    sign_up(quiet_container)
    view = quiet_container.members
    settings: list[str] = []
    apply_events = view.apply_events

    def recording(curs: Any, events: Any) -> None:
        settings.append(curs.execute("SHOW synchronous_commit").fetchone()["synchronous_commit"])
        apply_events(curs, events)

    monkeypatch.setattr(view, "apply_events", recording)
    ProjectionRunner(recorder=quiet_container.app.recorder, mapper=quiet_container.app.mapper, model=view).catch_up()
    assert settings and set(settings) == {"on"}

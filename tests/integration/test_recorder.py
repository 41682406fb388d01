"""OneTripRecorder: one-round-trip inserts, atomic refusal of duplicates, and reading many aggregates at once."""

import uuid
from typing import Any
from unittest.mock import patch

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent
from eventsourcing.postgres import PostgresAggregateRecorder
from psycopg import sql

from application.store import mutate_all
from domain.client import Client
from domain.project import Project
from domain.scopes import Role
from infrastructure.bootstrap import Container
from infrastructure.recorder import OneTripRecorder
from tests.integration.support import head, notifications, sign_up

pytestmark = pytest.mark.integration


def project_with_members(members: int) -> Project:
    owner = uuid.uuid4()
    project = Project(project_id=uuid.uuid4(), name=f"p{members}", owner_id=owner, actor=f"user:{owner}")
    for _ in range(members):
        project.add_member(user_id=uuid.uuid4(), role=Role.DEVELOPER, actor=f"user:{owner}")
    return project


def stored(container: Container, aggregate: Any) -> list[StoredEvent]:
    return [container.app.mapper.to_stored_event(e) for e in aggregate.collect_events()]


def test_the_application_uses_the_one_trip_recorder(container: Container) -> None:
    assert isinstance(container.app.recorder, OneTripRecorder)


def test_insert_returns_notification_ids_in_order(container: Container) -> None:
    recorder = container.app.recorder
    events = stored(container, project_with_members(2)) + stored(container, project_with_members(1))
    before = head(container)
    ids = recorder.insert_events(events)
    assert ids is not None and len(ids) == len(events)
    assert list(ids) == list(range(ids[0], ids[0] + len(events))) and ids[0] > before
    read = [n for n in notifications(container, after=before) if n.id in set(ids)]
    assert [(n.id, n.originator_id, n.originator_version) for n in read] == \
        [(i, e.originator_id, e.originator_version) for i, e in zip(ids, events, strict=True)]


def test_a_duplicate_version_refuses_the_whole_transaction(container: Container) -> None:
    recorder = container.app.recorder
    existing = project_with_members(0)
    recorder.insert_events(stored(container, existing))
    newcomer = project_with_members(1)
    duplicate = StoredEvent(originator_id=existing.id, originator_version=1, topic="domain.project:Project.Dup",
                            state=b'{"actor": "system"}')
    before = head(container)
    with pytest.raises(IntegrityError):
        recorder.insert_events([*stored(container, newcomer), duplicate])
    assert recorder.select_events(newcomer.id) == []
    assert [e.topic for e in recorder.select_events(existing.id)] == ["domain.project:Project.ProjectCreated"]
    assert head(container) == before


def test_a_duplicate_inside_one_transaction_is_refused(container: Container) -> None:
    recorder = container.app.recorder
    fresh = project_with_members(0)
    events = stored(container, fresh)
    with pytest.raises(IntegrityError):
        recorder.insert_events([events[0], events[0]])
    assert recorder.select_events(fresh.id) == []


def test_select_events_of_groups_aggregates_in_version_order(container: Container) -> None:
    recorder = container.app.recorder
    projects = [project_with_members(n) for n in (3, 0, 2)]
    for project in projects:
        container.app.save(project)
    unknown = uuid.uuid4()
    rows = recorder.select_events_of([projects[2].id, unknown, projects[0].id, projects[1].id])
    assert [(e.originator_id, e.originator_version) for e in rows] == \
        sorted((p.id, v) for p in projects for v in range(1, p.version + 1))
    assert len(rows) == 4 + 1 + 3
    for project in projects:
        assert [e.state for e in rows if e.originator_id == project.id] == \
            [e.state for e in recorder.select_events(project.id)]
    assert recorder.select_events_of([]) == []


def test_find_many_returns_aggregates_of_the_asked_type_only(container: Container) -> None:
    signed = sign_up(container)
    projects = [project_with_members(n) for n in (1, 2)]
    container.app.save(*projects)
    found = container.app.find_many([signed.project.id, projects[0].id, projects[1].id, signed.client.client.id,
                                     signed.user.id, uuid.uuid4(), projects[0].id], Project)
    assert set(found) == {signed.project.id, projects[0].id, projects[1].id}
    for project in projects:
        assert found[project.id].members == project.members and found[project.id].version == project.version
    clients = container.app.find_many([signed.client.client.id, signed.project.id], Client)
    assert list(clients) == [signed.client.client.id]
    assert clients[signed.client.client.id].secret_hash == signed.client.client.secret_hash


def test_select_events_and_versions_answers_both_reads_in_one_query(container: Container) -> None:
    recorder = container.app.recorder
    projects = [project_with_members(n) for n in (2, 0, 1)]
    container.app.save(*projects)
    streams, versioned = [projects[1].id, uuid.uuid4(), projects[0].id], [projects[2].id, uuid.uuid4(), projects[0].id]
    events, versions = recorder.select_events_and_versions(streams, versioned)
    assert [(e.originator_id, e.originator_version, e.topic, e.state) for e in events] == [
        (e.originator_id, e.originator_version, e.topic, e.state) for e in recorder.select_events_of(streams)]
    assert versions == recorder.select_versions(versioned) == {projects[2].id: 2, projects[0].id: 3}
    assert recorder.select_events_and_versions([], versioned) == ([], versions)
    assert recorder.select_events_and_versions(streams, []) == (recorder.select_events_of(streams), {})


def test_streams_and_versions_reads_once_with_the_one_trip_recorder(container: Container,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    signed = sign_up(container)
    recorder = container.app.recorder
    calls: list[str] = []
    for name in ("select_events_of", "select_versions", "select_events_and_versions"):
        original = getattr(recorder, name)
        monkeypatch.setattr(recorder, name, lambda *a, _n=name, _o=original: calls.append(_n) or _o(*a))
    streams, versions = container.app.streams_and_versions([signed.project.id, signed.client.client.id], Project,
                                                           [signed.client.client.id, signed.user.id])
    assert calls == ["select_events_and_versions"]
    assert list(streams) == [signed.project.id]
    assert mutate_all(None, streams[signed.project.id]).name == signed.project.name
    assert versions == {signed.client.client.id: signed.client.client.version, signed.user.id: signed.user.version}


def test_an_insert_notifies_nobody(container: Container, database_url: str) -> None:
    """Readers poll the head; a NOTIFY would take PostgreSQL's notification lock while the table lock is held."""
    recorder = container.app.recorder
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(recorder.channel_name)))
        ids = recorder.insert_events(stored(container, project_with_members(1)))
        assert ids
        assert list(listener.notifies(timeout=0.5)) == []
        listener.execute(sql.SQL("NOTIFY {}").format(sql.Identifier(recorder.channel_name)))
        assert len(list(listener.notifies(timeout=2.0, stop_after=1))) == 1  # the listener itself does hear


def test_select_events_answers_as_eventsourcings_without_composing_sql_per_call(container: Container) -> None:
    recorder = container.app.recorder
    project = project_with_members(3)
    recorder.insert_events(stored(container, project))
    shapes = [{}, {"gt": 1}, {"lte": 2}, {"gt": 1, "lte": 3}, {"desc": True}, {"desc": True, "limit": 2},
              {"gt": 1, "lte": 4, "desc": True, "limit": 1}, {"limit": 3}]
    for shape in shapes:
        assert recorder.select_events(project.id, **shape) == \
            PostgresAggregateRecorder.select_events(recorder, project.id, **shape), shape
    # A tripwire, not a fake: PostgreSQL still answers every query; composing SQL on a call would raise.
    with patch.object(sql.Composed, "as_bytes", side_effect=AssertionError("composed per call")):
        for shape in shapes:
            recorder.select_events(project.id, **shape)


def test_a_guarded_insert_needs_its_guard_streams_unchanged(container: Container) -> None:
    """A token decided on a client's version is saved only if the client's stream is still at that version: the
    check runs under the store's table lock, so no write comes between it and the insert."""
    recorder = container.app.recorder
    guard = project_with_members(1)  # version 2
    recorder.insert_events(stored(container, guard))
    current = stored(container, project_with_members(0))
    ids = recorder.insert_events(current, guards=[(guard.id, 2)])
    assert ids is not None and len(ids) == len(current)

    guard.add_member(user_id=uuid.uuid4(), role=Role.DEVELOPER, actor="user:someone")  # the guard moves to 3
    recorder.insert_events(stored(container, guard))
    stale, unknown = project_with_members(0), project_with_members(0)
    before = head(container)
    with pytest.raises(IntegrityError):
        recorder.insert_events(stored(container, stale), guards=[(guard.id, 2)])
    with pytest.raises(IntegrityError):  # a stream that does not exist is not at any version
        recorder.insert_events(stored(container, unknown), guards=[(uuid.uuid4(), 1)])
    assert head(container) == before
    assert recorder.select_events(stale.id) == [] and recorder.select_events(unknown.id) == []

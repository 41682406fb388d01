"""The Keyledger application's look-ups: typed load/find, and find_many with and without a one-query recorder."""

from collections.abc import Sequence
from typing import Any
from uuid import UUID, uuid4

import pytest

from application.oauth.grants import TokenRequest
from application.oauth.tokens import IssuedTokens
from application.store import mutate_all
from domain.client import Client
from domain.errors import NotFound
from domain.project import Project
from domain.user import User
from tests.unit.conftest import World


def test_load_refuses_a_missing_id_or_another_type(world: World) -> None:
    signed = world.sign_up("a@example.test")
    assert world.app.load(signed.project.id, Project).name == "Acme"
    with pytest.raises(NotFound, match="Project"):
        world.app.load(uuid4(), Project)
    with pytest.raises(NotFound, match="Project"):
        world.app.load(signed.user.id, Project)
    assert world.app.find(signed.user.id, Project) is None
    assert world.app.find(signed.user.id, User) is not None


def test_load_copies_unless_told_not_to(world: World) -> None:
    project_id = world.sign_up("a@example.test").project.id
    first, second = world.app.load(project_id, Project), world.app.load(project_id, Project)
    assert first is not second
    first.name = "changed in memory only"
    assert world.app.load(project_id, Project).name == "Acme"


def test_find_many_returns_only_existing_aggregates_of_the_kind(world: World) -> None:
    a, b = world.sign_up("a@example.test"), world.sign_up("b@example.test")
    ids = [a.client.client.id, b.client.client.id, a.user.id, uuid4(), a.client.client.id]
    found = world.app.find_many(ids, Client)
    assert set(found) == {a.client.client.id, b.client.client.id}
    assert found[b.client.client.id].client_id == b.client.client.client_id


def test_streams_and_versions_falls_back_to_two_reads(world: World) -> None:
    a = world.sign_up("a@example.test")
    streams, versions = world.app.streams_and_versions([a.client.client.id, a.project.id, uuid4()], Client,
                                                       [a.project.id, a.user.id, uuid4()])
    assert list(streams) == [a.client.client.id]  # the client's stream only, decoded and not replayed
    assert type(streams[a.client.client.id][0]).__name__ == "ClientCreated"
    assert mutate_all(None, streams[a.client.client.id]).client_id == a.client.client.client_id
    assert versions == {a.project.id: a.project.version, a.user.id: a.user.version}


class OneQueryRecorder:
    """Gives the in-memory recorder the ``select_events_of`` of keyledger's PostgreSQL recorder, and counts reads."""

    def __init__(self, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
        recorder = world.app.recorder
        self.select_events = recorder.select_events
        self.single_reads = 0
        self.batch_reads = 0

        def select_events(*args: Any, **kwargs: Any) -> Any:
            self.single_reads += 1
            return self.select_events(*args, **kwargs)

        monkeypatch.setattr(recorder, "select_events", select_events)
        monkeypatch.setattr(recorder, "select_events_of", self.select_events_of, raising=False)

    def select_events_of(self, originator_ids: Sequence[UUID]) -> list[Any]:
        self.batch_reads += 1
        return [event for i in originator_ids for event in self.select_events(i)]


def test_find_many_with_a_one_query_recorder(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = world.sign_up("a@example.test"), world.sign_up("b@example.test")
    client = world.app.load(a.client.client.id, Client)
    client.revoke(actor="user:x")
    world.app.save(client)
    reads = OneQueryRecorder(world, monkeypatch)
    found = world.app.find_many([b.client.client.id, a.client.client.id, a.project.id, uuid4()], Client)
    assert (reads.batch_reads, reads.single_reads) == (1, 0)
    assert set(found) == {a.client.client.id, b.client.client.id}
    assert found[a.client.client.id].revoked  # every event of the stream was applied, in order
    assert found[a.client.client.id].version == 2
    assert not found[b.client.client.id].revoked


def test_decide_batch_reads_all_clients_in_one_query(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    signed = [world.sign_up(f"u{i}@example.test") for i in range(3)]
    requests = [TokenRequest(grant_type="client_credentials", client_id=s.client.client.client_id,
                             client_secret=s.client.client_secret) for s in signed]
    requests.append(TokenRequest(grant_type="client_credentials", client_id=signed[0].client.client.client_id,
                                 client_secret=signed[1].client.client_secret))
    reads = OneQueryRecorder(world, monkeypatch)
    outcomes = world.tokens.decide_batch(requests)
    assert (reads.batch_reads, reads.single_reads) == (1, 0)
    assert [isinstance(o, IssuedTokens) for o in outcomes] == [True, True, True, False]
    assert [world.validator.validate(o.access_token)["project_id"] for o in outcomes[:3]] == [
        str(s.project.id) for s in signed]


def test_a_command_copy_is_taken_under_the_fast_forward_lock(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another thread fast-forwards the cached aggregate in place under this lock: a copy taken outside it could
    be torn or raise "dictionary changed size during iteration" (seen as 500s under parallel member additions)."""
    import application.store as store  # noqa: PLC0415

    signed = world.sign_up("owner@acme.test")
    world.app.load(signed.project.id, Project)  # cached now
    held: list[bool] = []
    original = store.deepcopy

    def checking(value: Any) -> Any:
        lock, _ = world.app.repository._fastforward_locks_inuse[signed.project.id]
        held.append(lock.locked())
        return original(value)

    monkeypatch.setattr(store, "deepcopy", checking)
    copied = world.app.load(signed.project.id, Project)
    assert held == [True]
    assert copied is not world.app.load(signed.project.id, Project, copy=False)

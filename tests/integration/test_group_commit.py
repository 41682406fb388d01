"""GroupCommitter on the real store: batching, per-caller failure, and decided token requests."""

import asyncio
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import IntegrityError

from application.oauth.errors import InvalidClient, InvalidGrant, InvalidScope, TemporarilyUnavailable
from application.oauth.grants import TokenRequest
from application.oauth.tokens import IssuedTokens
from domain.client import Client
from domain.ids import client_aggregate_id, email_index_id
from domain.project import Project
from domain.scopes import Role
from domain.token import Token, TokenKind
from domain.user import EmailIndex
from infrastructure.batching import REDECISIONS, CommitTimeout, GroupCommitter
from infrastructure.bootstrap import Container
from infrastructure.http.oauth import conflict_refusal
from tests.integration.support import GatedSave, head, notifications, sign_up

pytestmark = pytest.mark.integration

CALLERS = 30


def new_project(name: str = "Batched") -> Project:
    owner = uuid.uuid4()
    return Project(project_id=uuid.uuid4(), name=name, owner_id=owner, actor=f"user:{owner}")


@pytest.fixture
def gated(container: Container) -> Iterator[tuple[GroupCommitter, GatedSave]]:
    """A committer on the real store whose first transaction waits for the test to open the gate."""
    save = GatedSave(container.app.save)
    committer = GroupCommitter(save, decide=container.tokens.decide_batch)
    committer.submit(new_project("Gate"))
    assert save.entered.wait(timeout=10), "the committer never started its first transaction"
    yield committer, save
    save.gate.set()
    committer.close()


def test_concurrent_callers_share_one_transaction(container: Container,
                                                  gated: tuple[GroupCommitter, GatedSave]) -> None:
    committer, save = gated
    projects = [new_project() for _ in range(CALLERS)]
    queued = threading.Barrier(CALLERS + 1)
    positions: dict[int, Any] = {}

    def caller(i: int) -> None:
        future = committer.submit(projects[i])
        queued.wait(timeout=10)
        positions[i] = future.result(timeout=10)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(CALLERS)]
    for thread in threads:
        thread.start()
    queued.wait(timeout=10)
    save.gate.set()
    for thread in threads:
        thread.join(timeout=15)

    assert save.calls == [1, CALLERS], "the queued callers were not saved in one transaction"
    found = container.app.find_many([p.id for p in projects], Project)
    assert set(found) == {p.id for p in projects}
    stored = {p.id: container.app.recorder.select_events(p.id) for p in projects}
    assert all(len(events) == 1 for events in stored.values())
    assert len(set(positions.values())) == 1, "callers of one batch got different positions"


def test_a_conflicting_caller_fails_alone(container: Container, gated: tuple[GroupCommitter, GatedSave]) -> None:
    committer, save = gated
    existing = sign_up(container)
    email = existing.user.email
    good = [new_project() for _ in range(3)]
    clash = EmailIndex(email=email.upper(), user_id=uuid.uuid4(), actor="user:intruder")
    futures: list[Future[int]] = [committer.submit(good[0]), committer.submit(clash),
                                  committer.submit(good[1]), committer.submit(good[2])]
    save.gate.set()

    with pytest.raises(IntegrityError):
        futures[1].result(timeout=10)
    for future in (futures[0], futures[2], futures[3]):
        assert future.result(timeout=10) > 0
    assert save.calls[1] == 4, "the four callers were not first tried as one batch"
    assert set(container.app.find_many([p.id for p in good], Project)) == {p.id for p in good}
    assert container.app.load(email_index_id(email), EmailIndex).user_id == existing.user.id
    assert len(container.app.recorder.select_events(email_index_id(email))) == 1


def test_decided_requests_are_stored_before_their_futures_resolve(container: Container,
                                                                  gated: tuple[GroupCommitter, GatedSave]) -> None:
    committer, save = gated
    signed = sign_up(container)
    client_id, secret = signed.client.client.client_id, signed.client.client_secret
    wrong_secret = container.tokens.minter.client_secret()
    good = [TokenRequest(grant_type="client_credentials", client_id=client_id, client_secret=secret)
            for _ in range(4)]
    refused = {
        "wrong secret": (TokenRequest(grant_type="client_credentials", client_id=client_id,
                                      client_secret=wrong_secret), InvalidClient),
        "unknown client": (TokenRequest(grant_type="client_credentials", client_id="klc_nobody",
                                        client_secret=secret), InvalidClient),
        "unknown scope": (TokenRequest(grant_type="client_credentials", client_id=client_id, client_secret=secret,
                                       scope="everything:forever"), InvalidScope),
    }
    good_futures = [committer.submit_request(request) for request in good[:2]]
    refused_futures = {name: committer.submit_request(request) for name, (request, _) in refused.items()}
    good_futures += [committer.submit_request(request) for request in good[2:]]
    save.gate.set()

    jtis = []
    for future in good_futures:
        issued = future.result(timeout=10)
        assert isinstance(issued, IssuedTokens)
        jti = UUID(container.validator.validate(issued.access_token)["jti"])
        # Read straight from the store, at the moment the caller is answered.
        assert [e.topic for e in container.app.recorder.select_events(jti)] == ["domain.token:Token.TokenIssued"]
        jtis.append(jti)
    before = head(container)
    for name, future in refused_futures.items():
        with pytest.raises(refused[name][1]) as error:
            future.result(timeout=10)
        # The refusal's TokenRequestRefused is stored by the time it is answered, in the same batch.
        (refusal,) = error.value.aggregates
        assert [e.topic for e in container.app.recorder.select_events(refusal.id)] == [  # type: ignore[attr-defined]
            "domain.refusal:Refusal.TokenRequestRefused"]
    assert head(container) == before
    assert save.calls[1] == len(good) + len(refused), "the batch's tokens and refusals were not saved together"
    tokens = container.app.find_many(jtis, Token)
    assert len(tokens) == len(good)
    assert all(t.kind == TokenKind.ACCESS and t.project_id == signed.project.id for t in tokens.values())


def test_the_containers_committer_issues_durable_tokens(container: Container) -> None:
    signed = sign_up(container)
    request = TokenRequest(grant_type="client_credentials", client_id=signed.client.client.client_id,
                           client_secret=signed.client.client_secret)
    issued = container.committer.submit_request(request).result(timeout=10)
    jti = UUID(container.validator.validate(issued.access_token)["jti"])
    token = container.app.load(jti, Token)
    assert token.client_id == signed.client.client.client_id and token.project_id == signed.project.id
    with pytest.raises(InvalidClient):
        container.committer.submit_request(TokenRequest(grant_type="client_credentials", client_id="klc_nobody",
                                                        client_secret=signed.client.client_secret)).result(10)


def test_coroutines_of_one_batch_are_answered_together_and_a_cancelled_one_does_not_fail_the_rest(
        container: Container, gated: tuple[GroupCommitter, GatedSave]) -> None:
    """Coroutines wait on asyncio futures that the committer settles with one hand-off per loop and batch. One that
    stops waiting (its task cancelled: a client gone, a shutdown) is skipped: its aggregate is not saved, and the
    others of its batch still get their positions (a cancelled future must not turn their answers into errors)."""
    committer, save = gated
    projects = [new_project() for _ in range(5)]
    handed_off: list[int] = []

    async def scenario() -> list[Any]:
        loop = asyncio.get_running_loop()
        original = loop.call_soon_threadsafe

        def counting(callback: Any, *args: Any, **kwargs: Any) -> Any:
            handed_off.append(len(args[0]) if args and isinstance(args[0], list) else 0)
            return original(callback, *args, **kwargs)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        tasks = [asyncio.create_task(committer.saved(project)) for project in projects]
        await asyncio.sleep(0.05)  # every task has queued its item behind the gated first transaction
        tasks[2].cancel()
        await asyncio.sleep(0)
        save.gate.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(scenario())

    assert isinstance(results[2], asyncio.CancelledError)
    positions = [r for i, r in enumerate(results) if i != 2]
    assert all(isinstance(p, int) and p > 0 for p in positions) and len(set(positions)) == 1
    assert save.calls == [1, 4], "the four waiting coroutines were not saved in one transaction"
    assert handed_off == [5], "the batch's answers were not handed to the loop at once"
    found = container.app.find_many([p.id for p in projects], Project)
    assert set(found) == {p.id for i, p in enumerate(projects) if i != 2}


def test_a_batch_waits_for_the_rest_of_its_wave_but_a_lone_caller_never_waits(container: Container) -> None:
    """After a batch of N, the next batch takes its first caller and waits (up to ``linger``) until N are queued:
    callers of one wave that arrive a little apart commit together instead of as a small batch and a large one
    behind it. After a batch of one, a caller is taken alone at once (the long linger here would time it out)."""
    save = GatedSave(container.app.save)
    committer = GroupCommitter(save, linger=30.0)
    try:
        committer.submit(new_project("Gate"))
        assert save.entered.wait(timeout=10)
        wave = [committer.submit(new_project()) for _ in range(3)]  # queued behind the gate: one batch of 3
        save.gate.set()
        assert all(future.result(timeout=10) > 0 for future in wave)

        first = committer.submit(new_project())  # taken at once; the batch waits for two more
        late = threading.Timer(0.2, lambda: wave.extend(committer.submit(new_project()) for _ in range(2)))
        late.start()
        late.join()
        assert first.result(timeout=10) > 0 and all(future.result(timeout=10) > 0 for future in wave[3:])
        assert save.calls == [1, 3, 3], "the wave's late callers were not saved with its first"
    finally:
        save.gate.set()
        committer.close()

    alone = GroupCommitter(container.app.save, linger=30.0)
    try:
        for _ in range(3):  # each batch had one caller: none waits for company
            assert alone.submit(new_project()).result(timeout=10) > 0
    finally:
        alone.close()


def test_a_coroutine_stops_waiting_after_the_timeout_when_the_database_does_not_answer(container: Container) -> None:
    """A transaction that hangs (here: held at a gate) must not hold its callers forever: after ``timeout`` they
    get TimeoutError, which the HTTP layer answers with a 503. The work itself may still be saved afterwards."""
    save = GatedSave(container.app.save)
    committer = GroupCommitter(save, timeout=0.3)
    project, queued = new_project("Hung"), new_project("Queued behind it")
    try:
        async def scenario() -> list[Any]:
            first = asyncio.create_task(committer.saved(project))
            assert await asyncio.to_thread(save.entered.wait, 10)  # the first batch is in its (held) transaction
            second = asyncio.create_task(committer.saved(queued))  # so this one waits in the queue
            return await asyncio.gather(first, second, return_exceptions=True)

        results = asyncio.run(scenario())
        assert [type(r) for r in results] == [CommitTimeout, CommitTimeout]
        assert save.entered.is_set() and not save.gate.is_set()
        save.gate.set()
        assert committer.submit(new_project("After")).result(timeout=10) > 0  # the held batch is done by now
    finally:
        save.gate.set()
        committer.close()
    # The batch under way is saved (a timeout undoes nothing); the caller still queued, who stopped waiting, is not.
    assert set(container.app.find_many([project.id, queued.id], Project)) == {project.id}


def test_a_thread_that_stops_waiting_is_not_saved_if_its_batch_was_not_taken(container: Container) -> None:
    save = GatedSave(container.app.save)
    committer = GroupCommitter(save, timeout=0.3)
    queued = new_project("Queued, then abandoned")
    try:
        committer.submit(new_project("Gate"))
        assert save.entered.wait(timeout=10)
        with pytest.raises(TimeoutError):
            committer(queued)
        save.gate.set()
        assert committer.submit(new_project("After")).result(timeout=10) > 0
    finally:
        save.gate.set()
        committer.close()
    assert container.app.find_many([queued.id], Project) == {}


class Aborted(BaseException):
    """Not an Exception: what would end a thread that catches only ``Exception``."""


def test_the_committer_survives_a_batch_aborted_by_a_base_exception(container: Container) -> None:
    """The batch's callers get an error, and the committer goes on serving: a dead committer thread would leave
    every later caller waiting until its timeout."""
    calls: list[int] = []

    def save(*events: Any) -> Any:
        calls.append(len(events))
        if len(calls) == 1:
            raise Aborted()
        return container.app.save(*events)

    committer = GroupCommitter(save)
    try:
        with pytest.raises(RuntimeError, match="aborted"):
            committer.submit(new_project("Aborted")).result(timeout=10)
        assert committer.submit(new_project("After")).result(timeout=10) > 0
    finally:
        committer.close()


def test_a_token_decided_on_a_client_revoked_before_its_batch_commits_is_not_issued(container: Container) -> None:
    """The client is revoked (a DELETE of the client committing) after the batch read it and before the batch
    saves: the batch's save is refused on the client's moved stream and the request, decided again, is refused as
    a revoked client's. Without the guard the token was issued to a deleted client and outlived its deletion."""
    signed = sign_up(container)
    client = signed.client.client
    revoked = threading.Event()

    def decide_then_revoke(requests: list[Any]) -> list[Any]:
        outcomes = container.tokens.decide_batch(requests)
        if not revoked.is_set():
            revoked.set()
            fresh = container.app.load(client.id, type(client))
            fresh.revoke(actor="user:admin")
            container.app.save(fresh)
        return outcomes

    committer = GroupCommitter(container.app.save, decide=decide_then_revoke)
    try:
        before = head(container)
        future = committer.submit_request(TokenRequest(grant_type="client_credentials", client_id=client.client_id,
                                                       client_secret=signed.client.client_secret))
        with pytest.raises(InvalidClient):
            future.result(timeout=10)
    finally:
        committer.close()
    assert revoked.is_set()
    topics = [n.topic for n in notifications(container, after=before)]
    assert "domain.token:Token.TokenIssued" not in topics
    assert topics.count("domain.client:Client.ClientRevoked") == 1


def test_a_client_that_keeps_changing_gets_the_conflict_and_a_failing_redecision_fails_its_caller_alone(
        container: Container) -> None:
    """Each decision of the first caller's request is followed by a change of its client (a secret rotation, which
    keeps the presented secret working): after REDECISIONS decisions it gets the conflict, which the token endpoint
    answers 503 (``conflict_refusal``). The other caller's request, first in the batch, raises when decided again:
    only it fails."""
    keeps_changing, breaks = sign_up(container), sign_up(container)
    decisions: dict[str, int] = {}

    def decide(requests: list[Any]) -> list[Any]:
        outcomes = container.tokens.decide_batch(requests)
        for request in requests:
            decisions[request.client_id] = decisions.get(request.client_id, 0) + 1
            if request.client_id == breaks.client.client.client_id and decisions[request.client_id] > 1:
                raise ConnectionError("the limiter is unreachable")
            client = container.app.load(client_aggregate_id(request.client_id), Client)
            now = container.tokens.clock.now()
            client.rotate_secret(secret_hash=client.secret_hash, secret_hint="klcs_...", actor="user:admin",
                                 secret_expires_at=now + timedelta(days=1), previous_secret_expires_at=now)
            container.app.save(client)
        return outcomes

    committer = GroupCommitter(container.app.save, decide=decide)
    try:
        futures = [committer.submit_request(TokenRequest(
            grant_type="client_credentials", client_id=signed.client.client.client_id,
            client_secret=signed.client.client_secret)) for signed in (breaks, keeps_changing)]
        with pytest.raises(ConnectionError):
            futures[0].result(timeout=10)
        with pytest.raises(IntegrityError):  # decided again after the other caller's failure, not failed with it
            futures[1].result(timeout=10)
    finally:
        committer.close()
    assert decisions[keeps_changing.client.client.client_id] == 1 + REDECISIONS
    assert isinstance(conflict_refusal("client_credentials"), TemporarilyUnavailable)
    assert isinstance(conflict_refusal("refresh_token"), InvalidGrant)


def test_a_moved_guard_fails_only_its_own_request_in_a_mixed_batch(container: Container) -> None:
    """One batch: an unguarded save (a new project) and a client_credentials request whose client is revoked between
    its decision and the batch's save. The batch's guarded insert is refused as a whole; the project is then saved on
    its own and the request, decided again, is refused as a revoked client's."""
    signed = sign_up(container)
    client = signed.client.client

    def decide_then_revoke(requests: list[Any]) -> list[Any]:
        outcomes = container.tokens.decide_batch(requests)
        if any(r.client_id == client.client_id for r in requests) and not revoked:
            revoked.append(True)
            fresh = container.app.load(client.id, Client)
            fresh.revoke(actor="user:admin")
            container.app.save(fresh)
        return outcomes

    revoked: list[bool] = []
    save = GatedSave(container.app.save)
    committer = GroupCommitter(save, decide=decide_then_revoke)
    try:
        committer.submit(new_project("Gate"))
        assert save.entered.wait(timeout=10)
        project = new_project("Mixed")
        saved = committer.submit(project)
        request = committer.submit_request(TokenRequest(grant_type="client_credentials", client_id=client.client_id,
                                                        client_secret=signed.client.client_secret))
        save.gate.set()
        assert saved.result(timeout=10) > 0
        with pytest.raises(InvalidClient):
            request.result(timeout=10)
    finally:
        save.gate.set()
        committer.close()
    assert save.calls[1] == 2, "the project and the token were not in one batch"
    assert [e.topic for e in container.app.recorder.select_events(project.id)] == [
        "domain.project:Project.ProjectCreated"]


@contextmanager
def guard_and_gated_committer(container: Container) -> Iterator[tuple[Project, GroupCommitter, GatedSave]]:
    """A saved project to guard on, and a committer (no decider) whose first transaction waits for the gate."""
    guard = new_project("Guard")
    container.app.save(guard)
    save = GatedSave(container.app.save)
    committer = GroupCommitter(save)
    try:
        committer.submit(new_project("Gate"))
        assert save.entered.wait(timeout=10)
        yield guard, committer, save
    finally:
        save.gate.set()
        committer.close()


def test_aggregates_saved_with_a_moved_guard_get_the_conflict_and_the_rest_of_the_batch_is_saved(
        container: Container) -> None:
    """Aggregates handed in ready-made (a login decided in a worker thread) cannot be decided again by the
    committer: a guard that moved fails their caller with the conflict (the caller decides again), nothing of
    theirs is recorded, and the batch's other caller is saved. Without the rule the caller was told "saved" at
    position 0 while nothing had been recorded."""
    with guard_and_gated_committer(container) as (guard, committer, save):
        stale, fine = new_project("Stale"), new_project("Fine")
        refused = committer.submit(stale, guards=[(guard.id, guard.version - 1)])
        saved = committer.submit(fine)
        save.gate.set()
        with pytest.raises(IntegrityError):
            refused.result(timeout=10)
        assert saved.result(timeout=10) > 0
    assert container.app.recorder.select_events(stale.id) == []
    assert len(container.app.recorder.select_events(fine.id)) == 1


def test_a_write_in_the_batch_to_a_stream_another_caller_is_guarded_by_is_seen_by_that_guard(
        container: Container) -> None:
    """A guard is checked before the batch's inserts: a caller guarded by a stream another caller of the same batch
    writes (a rotation guarded by its family's first refresh token, beside the reuse detection that marks it) would
    pass it. The callers are then saved one by one, in order, so the guard sees the write and conflicts."""
    with guard_and_gated_committer(container) as (guard, committer, save):
        moved = container.app.load(guard.id, Project)
        moved.add_member(user_id=uuid.uuid4(), role=Role.DEVELOPER, actor="system")
        writer = committer.submit(moved)
        guarded_one = new_project("Guarded")
        guarded = committer.submit(guarded_one, guards=[(guard.id, guard.version)])
        save.gate.set()
        assert writer.result(timeout=10) > 0
        with pytest.raises(IntegrityError):
            guarded.result(timeout=10)
    assert container.app.recorder.select_events(guarded_one.id) == []
    assert save.calls[1:] == [1, 1], "the two callers were not saved one by one"

"""A login's family revoked from the live refresh token a request presents (a logout), decided on the token streams
with a token lookup model that holds only what was issued up to that token: no wait for the model to apply the whole
store; from a used token (a replay) the model is brought up to the store's head, as before. The model here has no
runner (``quiet_container``): it moves only when a test catches it up, so a revocation that waited for the store's
head would time out."""

import threading
from collections.abc import Callable
from dataclasses import replace
from uuid import UUID

import pytest
from eventsourcing.persistence import IntegrityError

from application.accounts import SignedUp
from application.oauth.client_revocation import RevocationOutcome
from application.oauth.errors import InvalidGrant
from application.oauth.family_revocation import FamilyRevocation, FamilyRevoker
from application.oauth.grants import IssuedTokens, TokenRequest
from application.oauth.revocation import RevocationRequest, Revoker
from domain.client import DASHBOARD, Client
from domain.ids import DASHBOARD_CLIENT_ID, client_aggregate_id, login_access_token_id
from domain.token import Token
from infrastructure.batching import GroupCommitter
from infrastructure.bootstrap import Container
from infrastructure.http.fast_revocation import revoke_known
from projections.base import ProjectionRunner
from tests.integration.fast_support import Harness
from tests.integration.support import PASSWORD, sign_up


def login(container: Container, account: SignedUp) -> IssuedTokens:
    return container.tokens.handle(TokenRequest(grant_type="password", client_id=DASHBOARD_CLIENT_ID,
                                                username=account.user.email, password=PASSWORD))


def rotate(container: Container, refresh_token: str | None) -> IssuedTokens:
    return container.tokens.handle(TokenRequest(grant_type="refresh_token", client_id=DASHBOARD_CLIENT_ID,
                                                refresh_token=refresh_token))


def logout(container: Container, refresh_token: str | None) -> None:
    container.revocation.handle(DASHBOARD, RevocationRequest(token=refresh_token, token_type_hint="refresh_token"))


def ids(*issued: IssuedTokens) -> list[UUID]:
    return [aggregate.id for tokens in issued for aggregate in tokens.aggregates]


def tokens(container: Container, token_ids: list[UUID]) -> list[Token]:
    return [container.app.load(token_id, Token) for token_id in token_ids]


def catch_up(container: Container) -> None:
    container.runner("token_lookup").catch_up()


def ends_after_catch_up(container: Container, action: Callable[[], object]) -> bool:
    """Runs ``action`` while another thread catches the model up 0.3 s later; whether it ended after that."""
    caught_up: list[bool] = []

    def later() -> None:
        threading.Event().wait(0.3)
        catch_up(container)
        caught_up.append(True)

    worker = threading.Thread(target=later)
    worker.start()
    try:
        action()
        return bool(caught_up)
    finally:
        worker.join()


def test_a_logout_needs_the_model_only_up_to_the_presented_token(quiet_container: Container) -> None:
    account = sign_up(quiet_container)
    session = login(quiet_container, account)
    catch_up(quiet_container)
    sign_up(quiet_container)  # the store's head moves on; nothing brings the model up to it
    logout(quiet_container, session.refresh_token)
    access, refresh = tokens(quiet_container, ids(session))
    assert access.revoked and refresh.revoked


def test_reuse_detection_waits_for_the_model_rather_than_walk_the_streams_from_the_replayed_token(
        quiet_container: Container) -> None:
    account = sign_up(quiet_container)
    session = login(quiet_container, account)
    catch_up(quiet_container)
    rotated = rotate(quiet_container, session.refresh_token)  # not in the model
    refused: list[Exception] = []

    def replay() -> None:
        try:
            rotate(quiet_container, session.refresh_token)  # the used token replayed
        except InvalidGrant as error:
            refused.append(error)

    # From a used token the streams lead through every rotation since, a query each: the model is read instead.
    assert ends_after_catch_up(quiet_container, replay) and refused
    first_access, first_refresh, new_refresh, new_access, used = tokens(quiet_container, ids(session, rotated))
    assert used.id == first_refresh.id and used.used and not used.revoked  # not revoked over its reuse
    assert isinstance(list(quiet_container.app.events.get(used.id))[-1], Token.RefreshTokenReuseDetected)
    assert [t.revoked for t in (first_access, new_refresh, new_access)] == [True, True, True]


def test_a_logout_waits_for_the_model_while_it_lacks_the_presented_token(quiet_container: Container) -> None:
    account = sign_up(quiet_container)
    session = login(quiet_container, account)
    rotated = rotate(quiet_container, session.refresh_token)  # the model has neither the login nor the rotation
    assert ends_after_catch_up(quiet_container, lambda: logout(quiet_container, rotated.refresh_token))
    assert all(t.revoked or t.used for t in tokens(quiet_container, ids(session, rotated)))


def test_a_rotation_the_model_holds_only_half_of_is_revoked_whole_through_the_parent(
        quiet_container: Container) -> None:
    account = sign_up(quiet_container)
    session = login(quiet_container, account)
    catch_up(quiet_container)
    rotated = rotate(quiet_container, session.refresh_token)  # saves the used token, the new refresh, the new access
    new_refresh, new_access, used = (aggregate.id for aggregate in rotated.aggregates)
    refreshed = list(quiet_container.app.events.get(used))[-1]
    issued = next(iter(quiet_container.app.events.get(new_refresh)))
    view = quiet_container.lookup
    with view.datastore.transaction(commit=True) as curs:  # a batch of the model that ended inside the rotation
        view.apply_events(curs, [refreshed, issued])
    sign_up(quiet_container)  # and the head moves on
    logout(quiet_container, rotated.refresh_token)  # no wait: the model holds the presented token
    first_access, _, refresh, access = tokens(quiet_container, [session.aggregates[0].id, used, new_refresh,
                                                                new_access])
    assert first_access.revoked and refresh.revoked
    assert access.revoked  # not in the model: named by the parent's stream


def test_revoking_a_used_refresh_token_waits_for_the_model_rather_than_walk_the_streams(
        quiet_container: Container) -> None:
    account = sign_up(quiet_container)
    session = login(quiet_container, account)
    catch_up(quiet_container)
    rotated = rotate(quiet_container, session.refresh_token)
    assert ends_after_catch_up(quiet_container, lambda: logout(quiet_container, session.refresh_token))
    assert all(t.revoked or t.used for t in tokens(quiet_container, ids(session, rotated)))


def test_the_batched_logout_leaves_a_token_the_model_lacks_to_the_general_path(quiet_container: Container,
                                                                                redis_url: str) -> None:
    harness = Harness(quiet_container, quiet_container.app.recorder.datastore.pool.conninfo, redis_url)
    try:
        account = sign_up(quiet_container)
        session = login(quiet_container, account)

        def lane() -> bool:
            return harness.loop.run_until_complete(revoke_known(harness.fast, quiet_container,
                                                                (DASHBOARD_CLIENT_ID, None), session.refresh_token,
                                                                "198.51.100.9"))

        assert lane() is False  # the model has not applied the login: the general path waits for it
        assert not any(t.revoked for t in tokens(quiet_container, ids(session)))
        catch_up(quiet_container)
        assert lane() is True
        assert all(t.revoked for t in tokens(quiet_container, ids(session)))
    finally:
        harness.close()


class CountingApp:
    """The application, counting the batched stream reads (``find_many``) made through it."""

    def __init__(self, app: object) -> None:
        self._app = app
        self.reads = 0

    def find_many(self, ids: object, kind: type) -> object:
        self.reads += 1
        return self._app.find_many(ids, kind)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self._app, name)


def test_the_batched_logout_does_not_walk_a_family_from_a_used_refresh_token(quiet_container: Container) -> None:
    account = sign_up(quiet_container)
    chain = [login(quiet_container, account)]
    for _ in range(5):
        chain.append(rotate(quiet_container, chain[-1].refresh_token))
    catch_up(quiet_container)
    app = CountingApp(quiet_container.app)
    revoker = FamilyRevoker(app=app, clock=quiet_container.tokens.clock, index=quiet_container.lookup)  # type: ignore[arg-type]

    replayed = chain[0].aggregates[1].id  # the login's refresh token, used five rotations ago
    assert not revoker.decide_batch([FamilyRevocation(client=DASHBOARD, token_id=replayed)])[0].decided
    assert app.reads == 0  # left to the general path (reuse detection) without reading a stream

    live = chain[-1].aggregates[0].id  # the last rotation's new refresh token
    [outcome] = revoker.decide_batch([FamilyRevocation(client=DASHBOARD, token_id=live)])
    assert outcome.decided and app.reads == 1  # every stream the family's revocation needs, in one read


def test_a_batched_logout_whose_stream_moves_before_the_save_fails_and_records_nothing(
        quiet_container: Container) -> None:
    """The events a batch decided (handed to the committer without their aggregates) keep their stream versions: a
    rotation committed between the decision and the save makes the committer's save, then its retry of that caller
    alone, conflict, and the caller falls back to the general path with nothing recorded."""
    container = quiet_container
    session = login(container, sign_up(container))
    catch_up(container)
    refresh = next(t for t in session.aggregates if t.kind == "refresh")
    revoker = FamilyRevoker(app=container.app, clock=container.tokens.clock, index=container.lookup)
    rotated: list[IssuedTokens] = []
    decisions: list[bool] = []

    def decide_then_rotate(requests: list[FamilyRevocation]) -> list[RevocationOutcome]:
        outcomes = revoker.decide_batch(requests)
        decisions.extend(outcome.decided for outcome in outcomes)
        rotated.append(rotate(container, session.refresh_token))  # through the container's own committer
        return outcomes

    committer = GroupCommitter(container.app.save, decide=decide_then_rotate)
    try:
        with pytest.raises(IntegrityError):
            committer.submit_request(FamilyRevocation(client=DASHBOARD, token_id=refresh.id)).result(timeout=10)
    finally:
        committer.close()
    assert decisions == [True]  # decided: the conflict, not a refusal, kept it from being recorded
    for token in tokens(container, ids(session, *rotated)):
        assert not token.revoked  # nothing of the decided logout was saved; the rotation stands
    assert container.app.load(refresh.id, Token).used


def test_a_reuse_detection_selecting_from_half_a_racing_rotation_revokes_its_new_pair(
        quiet_container: Container, monkeypatch: pytest.MonkeyPatch) -> None:
    """The model's runner may end a batch inside a transaction. A replay whose selection waited for the store's head
    as it was before the holder's rotation committed, and selects while the model holds only the rotation's first
    event, must still revoke the pair that rotation issued: the rotation saves the used token's ``TokenRefreshed``
    last, so the model still shows that token live, and its stream names the pair. Saved first, the model showed it
    used and the pair not yet issued, and the pair outlived the reuse detection."""
    account = sign_up(quiet_container)
    session = login(quiet_container, account)
    current = rotate(quiet_container, session.refresh_token)  # the login's refresh token is used up
    catch_up(quiet_container)
    before = quiet_container.revoker.head()
    racing = rotate(quiet_container, current.refresh_token)  # the holder's rotation, committed after that read
    view = quiet_container.lookup
    ProjectionRunner(recorder=quiet_container.app.recorder, mapper=quiet_container.app.mapper, model=view,
                     batch_size=1).run_once()  # the model holds the rotation's first event, not the rest
    monkeypatch.setattr(Revoker, "head", lambda _: before)  # the replay read the head before the rotation

    with pytest.raises(InvalidGrant):  # the stolen, used refresh token presented again
        rotate(quiet_container, session.refresh_token)

    pair = [token for token in tokens(quiet_container, ids(racing)) if token.id != racing.rotated]
    assert len(pair) == 2 and all(token.revoked for token in pair)
    with pytest.raises(InvalidGrant):
        rotate(quiet_container, racing.refresh_token)


def replay_refused(container: Container, refresh_token: str | None) -> InvalidGrant:
    """Presents a used refresh token again; the refusal it gets."""
    with pytest.raises(InvalidGrant) as refused:
        rotate(container, refresh_token)
    return refused.value


def test_reuse_detection_on_a_model_that_stays_behind_decides_on_the_streams(quiet_container: Container) -> None:
    """The model never catches up here: after the wait, the reuse is still recorded and the family revoked (it
    answered 503 and recorded nothing, and the family lived on). Its tokens the model lacks descend from the replayed
    token; the login's access token, which no stream names, is in the model. The model still lists the first
    rotation's refresh token as active: used since, it stays used."""
    account = sign_up(quiet_container)
    session = login(quiet_container, account)
    first = rotate(quiet_container, session.refresh_token)  # the thief's rotations
    catch_up(quiet_container)
    second = rotate(quiet_container, first.refresh_token)  # not in the model
    assert replay_refused(quiet_container, session.refresh_token).reason == "refresh_token_reused"
    login_access, replayed, first_refresh, first_access, _, live_refresh, live_access, _ = tokens(
        quiet_container, ids(session, first, second))
    assert isinstance(list(quiet_container.app.events.get(replayed.id))[-1], Token.RefreshTokenReuseDetected)
    assert all(t.revoked for t in (login_access, first_access, live_refresh, live_access))
    assert replayed.used and not replayed.revoked and first_refresh.used and not first_refresh.revoked


def rotations(container: Container, issued: IssuedTokens, count: int) -> list[IssuedTokens]:
    """``count`` rotations of the login ``issued`` began, each of the previous one's refresh token."""
    chain = [issued]
    for _ in range(count):
        chain.append(rotate(container, chain[-1].refresh_token))
    return chain


def test_reuse_detection_on_a_model_behind_the_whole_family_walks_up_to_the_replayed_tokens_access_token(
        quiet_container: Container) -> None:
    """The model lacks the whole family here (it lists nothing of it): the replayed token's own access token, issued
    with it by its parent's rotation, is named only by the parent's stream; the login's access token is named by no
    stream, and is found by its id, which follows from the family's (``login_access_token_id``)."""
    session, first, second, third = rotations(quiet_container, login(quiet_container, sign_up(quiet_container)), 3)
    replay_refused(quiet_container, first.refresh_token)
    _, first_access, _ = first.aggregates
    assert quiet_container.app.load(first_access.id, Token).revoked
    later = tokens(quiet_container, ids(first, second, third))
    assert not any(t.is_live(quiet_container.clock.now()) for t in later)
    login_access = tokens(quiet_container, ids(session))[0]
    assert login_access.id == login_access_token_id(session.aggregates[1].id) and login_access.revoked


def test_reuse_detection_on_a_model_behind_walks_down_a_bounded_number_of_rotations(
        quiet_container: Container) -> None:
    """Every used token of a family can be replayed, each a detection of its own: the walk down is bounded so that
    a long family cannot make each of them cost a read per rotation. A replay further behind than the bound leaves
    the family's live end to a later detection: here, the replay of a token within the bound of it."""
    bounded = replace(quiet_container.tokens, revoker=replace(quiet_container.tokens.revoker, lineage_generations=3))
    chain = rotations(quiet_container, login(quiet_container, sign_up(quiet_container)), 5)

    def replay(issued: IssuedTokens) -> None:
        with pytest.raises(InvalidGrant):
            bounded.handle(TokenRequest(grant_type="refresh_token", client_id=DASHBOARD_CLIENT_ID,
                                        refresh_token=issued.refresh_token))

    def live(issued: IssuedTokens) -> list[bool]:
        return [t.is_live(quiet_container.clock.now()) for t in tokens(quiet_container, ids(issued))]

    replay(chain[0])  # five rotations behind the live end: three followed, the fourth's access token and the fifth's
    # pair (the live end) not reached
    assert [live(issued)[:2] for issued in chain[1:]] == [[False, False]] * 3 + [[False, True], [True, True]]
    replay(chain[3])  # two behind
    assert not any(any(live(issued)) for issued in chain[1:])


def test_the_live_end_a_bounded_walk_did_not_reach_is_refused_and_revoked_when_presented(
        quiet_container: Container) -> None:
    """A reuse detected while the model lags walks a bounded number of rotations: a thief who rotated further meanwhile
    holds a live end it did not reach. The detection marks the family ended on its first refresh token, so that end is
    refused when presented, and its family revoked then, rather than living on until the family's lifetime ends."""
    bounded = replace(quiet_container.tokens, revoker=replace(quiet_container.tokens.revoker, lineage_generations=3))
    account = sign_up(quiet_container)
    chain = rotations(quiet_container, login(quiet_container, account), 6)
    with pytest.raises(InvalidGrant):  # a later token than the login's: its detection marks the login's token
        bounded.handle(TokenRequest(grant_type="refresh_token", client_id=DASHBOARD_CLIENT_ID,
                                    refresh_token=chain[1].refresh_token))
    now = quiet_container.clock.now()
    end = tokens(quiet_container, ids(chain[-1])[:2])  # the last rotation's new pair
    assert all(t.is_live(now) for t in end)  # the walk did not reach the family's live end
    root = quiet_container.app.load(chain[0].aggregates[1].id, Token)
    assert isinstance(list(quiet_container.app.events.get(root.id))[-1], Token.RefreshFamilyEnded)
    client = quiet_container.app.load(client_aggregate_id(account.client.client.client_id), Client)
    assert quiet_container.introspection.handle(client, chain[-1].refresh_token) == {"active": False}
    with pytest.raises(InvalidGrant, match="revoked"):
        rotate(quiet_container, chain[-1].refresh_token)
    assert not any(t.is_live(now) for t in tokens(quiet_container, ids(*chain)))
    assert all(t.revoked for t in tokens(quiet_container, ids(chain[-1])[:2]))


def test_a_rotation_decided_before_its_family_ended_issues_nothing_after(quiet_container: Container) -> None:
    """The rotation's save is guarded by the family's first refresh token: a reuse detected between the decision and
    the save marks it (``Token.end_family``), the save conflicts, and the request decided again is refused."""
    session = login(quiet_container, sign_up(quiet_container))
    first = rotate(quiet_container, session.refresh_token)
    request = TokenRequest(grant_type="refresh_token", client_id=DASHBOARD_CLIENT_ID, refresh_token=first.refresh_token)
    decided = quiet_container.tokens.decide(request)
    root = quiet_container.app.load(session.aggregates[1].id, Token)
    root.end_family(actor="system")
    quiet_container.app.save(root)
    with pytest.raises(IntegrityError):
        quiet_container.tokens.save(*decided.aggregates, guards=decided.guards)
    assert quiet_container.tokens.signed_on_stale_keys(decided)  # decided again: refused, the live end revoked
    with pytest.raises(InvalidGrant, match="revoked"):
        quiet_container.tokens.handle(request)
    assert all(t.revoked for t in tokens(quiet_container, ids(first)[:2]))

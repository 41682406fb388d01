"""A person changing their own password (``application.passwords``), on the in-memory store: the current password
checked within the login's limits, the new one recorded, and every session of theirs ended with it."""

from typing import Any
from uuid import uuid4

import pytest

from application.oauth.errors import InvalidGrant, TooManyAttempts
from application.oauth.grants import TokenRequest
from application.oauth.introspection import IntrospectionEndpoint
from application.oauth.limits import AttemptLimits
from application.oauth.revocation import TokenFinder
from application.oauth.tokens import IssuedTokens
from application.passwords import PASSWORD_CHANGED, ChangePassword, PasswordChanger
from domain.client import Client
from domain.errors import InvalidArgument, NotFound
from domain.token import Token
from domain.user import User
from projections.audit_entry import entry_of
from tests.unit.conftest import PASSWORD, FixedClock, World, build_world
from tests.unit.test_token_admin import issue

EMAIL = "ada@example.test"
NEW = "a brand new passphrase"


def changer(world: World) -> PasswordChanger:
    return PasswordChanger(app=world.app, passwords=world.passwords, limiter=world.limiter,
                           revoker=world.tokens.revoker, index=world.tokens.revoker.index)


def login(world: World, password: str = PASSWORD, email: str = EMAIL) -> IssuedTokens:
    return world.tokens.handle(TokenRequest(grant_type="password", client_id="dashboard", username=email,
                                            password=password, source="198.51.100.4"))


def test_a_new_password_ends_every_session_and_only_it_logs_in(world: World) -> None:
    ada = world.sign_up(EMAIL)
    first, second = login(world), login(world)
    client_token = issue(world, ada)  # the project's API key: not the person's session
    grace = world.sign_up("grace@example.test")
    theirs = login(world, email="grace@example.test")
    revoked = changer(world).change(ChangePassword(user_id=ada.user.id, current_password=PASSWORD, new_password=NEW,
                                                   source="198.51.100.4"))
    assert revoked == 4  # two logins: an access and a refresh token each
    ended = [*first.aggregates, *second.aggregates]
    assert all(world.app.load(t.id, Token).revoked for t in ended)
    assert {list(world.app.events.get(t.id))[-1].reason for t in ended} == {PASSWORD_CHANGED}
    assert not world.app.load(client_token, Token).revoked
    assert not any(world.app.load(t.id, Token).revoked for t in theirs.aggregates)
    assert world.passwords.verify(world.app.load(ada.user.id, User).password_hash, NEW)
    with pytest.raises(InvalidGrant):
        login(world)  # the old password
    assert login(world, NEW).access_token
    with pytest.raises(InvalidGrant):  # a session's refresh token ended with it
        world.tokens.handle(TokenRequest(grant_type="refresh_token", client_id="dashboard",
                                         refresh_token=first.refresh_token))
    assert grace.user.id != ada.user.id
    changed = list(world.app.events.get(ada.user.id))[-1]
    entry = entry_of(1, changed)  # the audit ledger's entry: who changed it and when, never a hash of it
    assert (entry.type, entry.user_id, set(entry.data)) == ("PasswordChanged", ada.user.id, {"changed_at"})


def test_a_wrong_current_password_changes_nothing_is_recorded_and_counts_as_a_failed_login() -> None:
    world = build_world(limits=AttemptLimits(per_account=4))
    try:
        ada = world.sign_up(EMAIL)
        session = login(world)
        wrong = ChangePassword(user_id=ada.user.id, current_password="not my password", new_password=NEW,
                               source="198.51.100.4", user_agent="curl/8\x00")
        before = world.position()
        for guesses in (2, 4):
            with pytest.raises(InvalidArgument, match="current_password"):
                changer(world).change(wrong)
            # Two candidates tested (the current password, then the new one): two failures counted, not one.
            assert world.limiter.count(("account", EMAIL)) == guesses
        # Each guess is recorded for the audit, as a refused login is; neither password is.
        refused = [n for n in world.app.recorder.select_notifications(start=before + 1, limit=10)]
        assert [n.topic.rsplit(".", 1)[-1] for n in refused] == ["PasswordChangeRefused"] * 2
        assert all(b"not my password" not in n.state and NEW.encode() not in n.state for n in refused)
        event = world.app.mapper.to_domain_event(refused[0])
        assert (event.user_id, event.reason, event.source, event.user_agent, event.actor) == (
            ada.user.id, "password_wrong", "198.51.100.4", "curl/8?", f"user:{ada.user.id}")
        assert world.app.load(ada.user.id, User).version == ada.user.version  # the person's stream is untouched
        before = world.position()
        with pytest.raises(TooManyAttempts):  # the account is locked, for this as for a login
            changer(world).change(ChangePassword(user_id=ada.user.id, current_password=PASSWORD, new_password=NEW))
        assert world.position() == before  # a refusal before any verification is not recorded
        with pytest.raises(TooManyAttempts):
            login(world)
        assert not any(world.app.load(t.id, Token).revoked for t in session.aggregates)
    finally:
        world.app.close()


def test_the_same_password_again_and_an_unknown_account_are_refused(world: World) -> None:
    ada = world.sign_up(EMAIL)
    with pytest.raises(InvalidArgument, match="differ"):
        changer(world).change(ChangePassword(user_id=ada.user.id, current_password=PASSWORD, new_password=PASSWORD))
    with pytest.raises(NotFound):
        changer(world).change(ChangePassword(user_id=uuid4(), current_password=PASSWORD, new_password=NEW))


class LaggingRevoker:
    """A revoker whose passes cannot finish: the token lookup model never catches up."""

    def __init__(self, world: World) -> None:
        self.clock = world.tokens.revoker.clock

    def revoke_until_none(self, *args: object, **kwargs: object) -> int:
        raise TimeoutError("the index did not catch up")


def test_the_same_request_again_finishes_a_change_whose_revocations_did_not(world: World) -> None:
    """The passes may time out after ``PasswordChanged`` is committed (a lagging index: 503): sending the request
    again must end the sessions, not count a wrong current password."""
    ada = world.sign_up(EMAIL)
    session = login(world)
    command = ChangePassword(user_id=ada.user.id, current_password=PASSWORD, new_password=NEW, source="198.51.100.4")
    with pytest.raises(TimeoutError):
        lagging_changer(world).change(command)
    assert not any(world.app.load(t.id, Token).revoked for t in session.aggregates)
    version = world.app.load(ada.user.id, User).version
    assert changer(world).change(command) == 2
    assert all(world.app.load(t.id, Token).revoked for t in session.aggregates)
    assert world.app.load(ada.user.id, User).version == version  # no second change recorded
    assert world.limiter.count(("account", EMAIL)) == 0  # a success, not a counted failure


def lagging_changer(world: World, revoker: "LaggingRevoker | None" = None) -> PasswordChanger:
    """A changer whose revocation passes cannot finish (a 503 after ``PasswordChanged`` is committed)."""
    return PasswordChanger(app=world.app, passwords=world.passwords, limiter=world.limiter,
                           revoker=revoker or LaggingRevoker(world),  # type: ignore[arg-type]
                           index=world.tokens.revoker.index)


def test_no_session_older_than_the_change_refreshes_or_introspects_active_even_before_its_revocation(
        world: World) -> None:
    """While the passes lag (503), an attacker's session from before the change must not live on through refreshes:
    its access token ends at its expiry, its refresh is refused now; and a resource server introspecting its refresh
    token hears inactive (RFC 7662: ``active`` means usable now). A session begun after the change is unaffected."""
    ada = world.sign_up(EMAIL)
    theirs = login(world)
    client = ada.client.client
    assert introspect(world, client, theirs.refresh_token)["active"] is True
    world.clock.advance(seconds=1)
    with pytest.raises(TimeoutError):
        lagging_changer(world).change(ChangePassword(user_id=ada.user.id, current_password=PASSWORD,
                                                     new_password=NEW))
    assert not world.app.load(theirs.aggregates[1].id, Token).revoked  # the passes never reached it
    assert introspect(world, client, theirs.refresh_token) == {"active": False}
    with pytest.raises(InvalidGrant, match="revoked"):
        world.tokens.handle(TokenRequest(grant_type="refresh_token", client_id="dashboard",
                                         refresh_token=theirs.refresh_token))
    world.clock.advance(seconds=1)
    mine = login(world, NEW)
    assert introspect(world, client, mine.refresh_token)["active"] is True
    rotated = world.tokens.handle(TokenRequest(grant_type="refresh_token", client_id="dashboard",
                                               refresh_token=mine.refresh_token))
    assert rotated.access_token  # a session begun after the change refreshes as ever


def introspect(world: World, client: Client, token: str) -> dict[str, Any]:
    finder = TokenFinder(app=world.app, minter=world.minter, secrets=world.secrets, access_tokens=world.validator)
    endpoint = IntrospectionEndpoint(finder=finder, clock=world.clock, issuer=world.settings.issuer,
                                     audience=world.settings.audience)
    return endpoint.handle(client, token)


def test_a_login_with_the_old_password_saved_just_before_the_change_does_not_outlive_it(world: World) -> None:
    """``changed_at`` is taken before the change commits: a login decided on the old password in between is issued
    after that instant and saved before the change. Its session predates the change by the account version it was
    decided on, so its refresh is refused while the passes lag (or after they time out), as any older session's."""
    ada = world.sign_up(EMAIL)
    lagging = LaggingRevoker(world)
    lagging.clock = FixedClock(world.clock.now())  # the instant the change takes, before the login below
    world.clock.advance(seconds=2)
    racer = login(world)  # the old password, saved before the change
    with pytest.raises(TimeoutError):
        lagging_changer(world, lagging).change(ChangePassword(user_id=ada.user.id, current_password=PASSWORD,
                                                              new_password=NEW))
    user = world.app.load(ada.user.id, User)
    assert user.password_changed_at is not None and racer.aggregates[1].issued_at > user.password_changed_at
    with pytest.raises(InvalidGrant, match="revoked"):
        world.tokens.handle(TokenRequest(grant_type="refresh_token", client_id="dashboard",
                                         refresh_token=racer.refresh_token))
    assert introspect(world, ada.client.client, racer.refresh_token) == {"active": False}

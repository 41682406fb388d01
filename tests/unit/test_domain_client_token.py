"""Client secrets (expiry, rotation grace, revocation) and Token life."""

from datetime import timedelta
from uuid import uuid4

import pytest

from domain.client import DASHBOARD, Client
from domain.errors import InvariantViolated
from domain.ids import client_aggregate_id
from domain.token import Token, TokenKind, proves
from tests.unit.conftest import T0

DAY = timedelta(days=1)


def new_client(expires_in: timedelta = 10 * DAY) -> Client:
    return Client(client_id="klc_abc", project_id=uuid4(), name="ci", scope="project:read tokens:read",
                  secret_hash="h1", secret_hint="klcs_...AAAA", secret_expires_at=T0 + expires_in,
                  access_token_ttl=None, actor="user:u")


def rotate(client: Client, new_hash: str, at_grace_end: timedelta, new_expiry: timedelta = 100 * DAY) -> None:
    client.rotate_secret(secret_hash=new_hash, secret_hint="klcs_...BBBB", secret_expires_at=T0 + new_expiry,
                         previous_secret_expires_at=T0 + at_grace_end, actor="user:u")


def test_client_id_gives_a_deterministic_aggregate_id() -> None:
    client = new_client()
    assert client.id == Client.create_id("klc_abc") == client_aggregate_id("klc_abc")
    assert Client.create_id("klc_abd") != client.id


def test_current_secret_matches_until_it_expires() -> None:
    client = new_client(expires_in=10 * DAY)
    assert client.secret_matches("h1", T0)
    assert client.secret_matches("h1", T0 + 10 * DAY - timedelta(microseconds=1))
    assert not client.secret_matches("h1", T0 + 10 * DAY)
    assert not client.secret_matches("h1", T0 + 11 * DAY)


def test_a_wrong_hash_does_not_match() -> None:
    client = new_client()
    assert not client.secret_matches("h2", T0)
    assert not client.secret_matches("", T0)
    assert not client.secret_matches("h1" + "0", T0)


def test_previous_secret_works_during_the_grace_period_only() -> None:
    client = new_client(expires_in=10 * DAY)
    rotate(client, "h2", at_grace_end=2 * DAY)
    assert client.secret_matches("h1", T0 + DAY)
    assert client.secret_matches("h2", T0 + DAY)
    assert not client.secret_matches("h1", T0 + 2 * DAY)
    assert not client.secret_matches("h1", T0 + 50 * DAY)
    assert client.secret_matches("h2", T0 + 50 * DAY)
    assert client.secret_hint == "klcs_...BBBB"


def test_grace_never_extends_the_old_secrets_own_expiry() -> None:
    client = new_client(expires_in=10 * DAY)
    rotate(client, "h2", at_grace_end=30 * DAY)
    assert client.previous_secret_expires_at == T0 + 10 * DAY
    assert client.secret_matches("h1", T0 + 9 * DAY)
    assert not client.secret_matches("h1", T0 + 10 * DAY)
    assert not client.secret_matches("h1", T0 + 20 * DAY)


def test_rotation_without_grace_cuts_the_old_secret_at_once() -> None:
    client = new_client()
    rotate(client, "h2", at_grace_end=timedelta(0))
    assert not client.secret_matches("h1", T0)
    assert client.secret_matches("h2", T0)


def test_a_second_rotation_forgets_the_first_secret() -> None:
    client = new_client(expires_in=10 * DAY)
    rotate(client, "h2", at_grace_end=5 * DAY)
    rotate(client, "h3", at_grace_end=5 * DAY)
    assert not client.secret_matches("h1", T0 + DAY)
    assert client.secret_matches("h2", T0 + DAY)
    assert client.secret_matches("h3", T0 + DAY)


def test_a_revoked_client_matches_nothing() -> None:
    client = new_client()
    rotate(client, "h2", at_grace_end=5 * DAY)
    client.revoke(actor="user:u")
    assert not client.secret_matches("h1", T0)
    assert not client.secret_matches("h2", T0)


def test_a_revoked_client_cannot_be_rotated_or_revoked_again() -> None:
    client = new_client()
    client.revoke(actor="user:u")
    client.collect_events()
    with pytest.raises(InvariantViolated):
        rotate(client, "h2", at_grace_end=DAY)
    with pytest.raises(InvariantViolated):
        client.revoke(actor="user:u")
    assert client.collect_events() == []
    assert client.secret_hash == "h1"


def test_client_events_carry_actor_and_project_and_no_secret() -> None:
    client = new_client()
    rotate(client, "h2", at_grace_end=DAY)
    client.revoke(actor="system")
    events = client.collect_events()
    assert [type(e).__name__ for e in events] == ["ClientCreated", "ClientSecretRotated", "ClientRevoked"]
    assert [e.actor for e in events] == ["user:u", "user:u", "system"]  # type: ignore[attr-defined]
    assert all(e.project_id == client.project_id for e in events)  # type: ignore[attr-defined]


def test_grant_rules_of_project_clients_and_the_dashboard() -> None:
    client = new_client()
    assert client.allows_grant("client_credentials")
    assert not client.allows_grant("password")
    assert not client.allows_grant("refresh_token")
    assert client.scopes == {"project:read", "tokens:read"}
    assert DASHBOARD.client_id == "dashboard"
    assert DASHBOARD.allows_grant("password")
    assert DASHBOARD.allows_grant("refresh_token")
    assert not DASHBOARD.allows_grant("client_credentials")


def new_token() -> Token:
    return Token(token_id=uuid4(), kind=TokenKind.ACCESS, project_id=uuid4(), client_id="klc_abc", user_id=None,
                 scope="project:read", grant_type="client_credentials", issued_at=T0,
                 expires_at=T0 + timedelta(hours=1), family_id=None, parent_id=None, actor="client:klc_abc",
                 family_expires_at=None, value_hash=None, account_version=None)


def test_token_is_live_until_it_expires() -> None:
    token = new_token()
    assert token.is_live(T0)
    assert token.is_live(T0 + timedelta(minutes=59, seconds=59))
    assert not token.is_live(T0 + timedelta(hours=1))


def test_a_revoked_token_is_not_live_and_cannot_be_revoked_twice() -> None:
    token = new_token()
    token.collect_events()
    token.revoke(reason="user request", actor="user:u")
    assert not token.is_live(T0)
    with pytest.raises(InvariantViolated):
        token.revoke(reason="again", actor="user:u")
    events = token.collect_events()
    assert [type(e).__name__ for e in events] == ["TokenRevoked"]
    assert events[0].reason == "user request"  # type: ignore[attr-defined]
    assert events[0].actor == "user:u"  # type: ignore[attr-defined]
    assert events[0].project_id == token.project_id  # type: ignore[attr-defined]


def test_the_revocation_built_from_the_issuance_is_the_one_the_aggregate_records() -> None:
    """The batched revocation's shortcut records exactly ``revoke``'s event (every field but the time), and only
    while the token is live."""
    token = new_token()
    [issued] = token.collect_events()
    revocation_id = uuid4()
    built = Token.revocation_of_issued(issued, now=T0, reason="revoked by client", actor="client:klc_abc",
                                       revocation_id=revocation_id)
    token.revoke(reason="revoked by client", actor="client:klc_abc", revocation_id=revocation_id)
    [recorded] = token.collect_events()
    assert type(built) is type(recorded)
    assert {**vars(built), "timestamp": None} == {**vars(recorded), "timestamp": None}
    assert built.mutate(issued.mutate(None)).revoked  # replays like the recorded one
    with pytest.raises(InvariantViolated):
        Token.revocation_of_issued(issued, now=T0 + timedelta(hours=1), reason="late", actor="client:klc_abc")


def test_the_revocation_built_from_a_replayed_token_is_the_one_revoke_records() -> None:
    """The batched logout's shortcut, on a token whose stream has more than its issuance: exactly ``revoke``'s event
    (every field but the time), and refused once the token is revoked."""
    token = Token(token_id=uuid4(), kind=TokenKind.REFRESH, project_id=None, client_id=DASHBOARD.client_id,
                  user_id=uuid4(), scope="openid", grant_type="password", issued_at=T0,
                  expires_at=T0 + timedelta(hours=1), family_id=uuid4(), parent_id=None, actor="user:u",
                  family_expires_at=T0 + timedelta(days=90), value_hash=None, account_version=None)
    token.refresh(refresh_id=uuid4(), access_id=uuid4(), now=T0, actor="user:u")  # version 2: used up
    revocation_id = uuid4()
    built = token.revocation(reason="revoked by client", actor="client:dashboard", revocation_id=revocation_id)
    token.revoke(reason="revoked by client", actor="client:dashboard", revocation_id=revocation_id)
    recorded = token.collect_events()[-1]
    assert type(built) is type(recorded) and built.originator_version == 3
    assert {**vars(built), "timestamp": None} == {**vars(recorded), "timestamp": None}
    with pytest.raises(InvariantViolated):
        token.revocation(reason="again", actor="client:dashboard")


def test_a_refresh_token_recorded_expired_cannot_be_used_whatever_the_callers_clock() -> None:
    """A sweep whose clock runs ahead may record the expiry before the refreshing host's clock reaches it; the
    token is not used after its TokenExpired (so a token's events keep the order of its life)."""
    token = Token(token_id=uuid4(), kind=TokenKind.REFRESH, project_id=None, client_id=DASHBOARD, user_id=uuid4(),
                  scope="openid", grant_type="password", issued_at=T0, expires_at=T0 + timedelta(hours=1),
                  family_id=uuid4(), parent_id=None, actor="user:u", family_expires_at=T0 + timedelta(days=90),
                  value_hash=None, account_version=None)
    token.expire(now=T0 + timedelta(hours=1, seconds=5), actor="system")
    before_expiry = T0 + timedelta(minutes=59, seconds=59)  # the refreshing host's clock, behind the sweep's
    assert token.refusal(before_expiry) == "expired"
    with pytest.raises(InvariantViolated):
        token.refresh(refresh_id=uuid4(), access_id=uuid4(), now=before_expiry, actor="user:u")


def test_a_token_issued_with_its_value_hash_proves_that_value_and_an_older_issuance_replays_proving_nothing() -> None:
    proof = "ab" * 32
    token = Token(token_id=uuid4(), kind=TokenKind.ACCESS, project_id=None, client_id=DASHBOARD.client_id,
                  user_id=uuid4(), scope="openid", grant_type="password", issued_at=T0,
                  expires_at=T0 + timedelta(minutes=15), family_id=uuid4(), parent_id=None, actor="user:u",
                  family_expires_at=None, value_hash=proof, account_version=None)
    [issued] = token.collect_events()
    assert proves(issued, proof) and not proves(issued, "ab" * 31 + "ac") and not proves(issued, "")
    # Stored before the fields existed: the mapper rebuilds the event from its recorded state alone.
    recorded = {name: value for name, value in vars(issued).items() if name not in {"value_hash", "account_version"}}
    older = object.__new__(Token.TokenIssued)
    older.__dict__.update(recorded)
    replayed = older.mutate(None)
    assert replayed is not None and replayed.value_hash is None and replayed.client_id == DASHBOARD.client_id
    assert replayed.account_version is None  # judged by its issuance time (``User.predates_password_change``)
    assert not proves(older, proof)

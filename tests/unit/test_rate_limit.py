"""Abuse limits in the grant logic: failed password logins and client authentications, on the in-memory store with
the in-memory limiter (the Redis adapter's own semantics are tested in tests/integration/test_rate_limit.py)."""

from collections.abc import Iterator

import pytest

from application.oauth.errors import InvalidClient, InvalidGrant, TemporarilyUnavailable, TooManyAttempts
from application.oauth.grants import TokenRequest
from application.oauth.limits import (
    ACCOUNT,
    ADDRESS,
    CLIENT,
    AttemptBudget,
    AttemptLimits,
    client_keys,
    source_network,
)
from application.oauth.tokens import IssuedTokens
from domain.user import User
from tests.unit.conftest import PASSWORD, World, build_world

EMAIL = "ada@example.test"
LIMITS = AttemptLimits(per_account=3, per_client=3, per_address=5, window=600, lockout=900)
HOME, AWAY = "192.0.2.1", "198.51.100.7"


@pytest.fixture
def world() -> Iterator[World]:
    built = build_world(limits=LIMITS)
    yield built
    built.app.close()


def login(username: str = EMAIL, password: str = PASSWORD, source: str | None = HOME) -> TokenRequest:
    return TokenRequest(grant_type="password", client_id="dashboard", username=username, password=password,
                        source=source)


def outcome(world: World, request: TokenRequest) -> str:
    try:
        world.tokens.decide(request)
    except (InvalidGrant, InvalidClient, TooManyAttempts) as error:
        return type(error).__name__
    return "ok"


def fail_logins(world: World, n: int, username: str = EMAIL, source: str | None = HOME) -> list[str]:
    return [outcome(world, login(username, "wrong " + PASSWORD, source)) for _ in range(n)]


def test_the_account_locks_after_its_limit_and_refuses_even_the_right_password(world: World) -> None:
    world.sign_up(EMAIL)
    assert fail_logins(world, 3) == ["InvalidGrant"] * 3
    with pytest.raises(TooManyAttempts) as refused:
        world.tokens.decide(login())
    assert refused.value.status_code == 429 and refused.value.error == "temporarily_unavailable"
    assert refused.value.retry_after == LIMITS.lockout
    # Refused before the password is checked: nothing more is counted while locked.
    assert world.limiter.count((ACCOUNT, EMAIL)) == 3


def test_the_lock_ends_after_lockout_seconds(world: World) -> None:
    world.sign_up(EMAIL)
    fail_logins(world, 3)
    world.clock.advance(seconds=LIMITS.lockout - 1)
    with pytest.raises(TooManyAttempts) as refused:
        world.tokens.decide(login())
    assert refused.value.retry_after == 1
    world.clock.advance(seconds=1)
    assert outcome(world, login()) == "ok"


def test_failures_below_the_limit_are_forgotten_after_the_window(world: World) -> None:
    world.sign_up(EMAIL)
    fail_logins(world, 2)
    world.clock.advance(seconds=LIMITS.window)
    assert fail_logins(world, 2) == ["InvalidGrant"] * 2
    assert outcome(world, login()) == "ok"


def test_a_successful_login_resets_the_account_but_not_the_address(world: World) -> None:
    world.sign_up(EMAIL)
    fail_logins(world, 2)
    assert outcome(world, login()) == "ok"
    assert world.limiter.count((ACCOUNT, EMAIL)) == 0
    assert world.limiter.count((ADDRESS, HOME)) == 2  # the success itself is not counted
    assert fail_logins(world, 2) == ["InvalidGrant"] * 2  # two more: still under the account limit of 3
    assert outcome(world, login()) == "ok"
    # The address has 4 failures now: one more from it, on any account, and it is refused.
    assert fail_logins(world, 2, "someone-else@example.test") == ["InvalidGrant", "TooManyAttempts"]
    assert outcome(world, login()) == "TooManyAttempts"
    assert outcome(world, login(source=AWAY)) == "ok"


def test_unknown_emails_are_counted_like_registered_ones(world: World) -> None:
    world.sign_up(EMAIL)
    ghost = "nobody@example.test"
    known = fail_logins(world, 4, EMAIL, source=HOME)
    unknown = fail_logins(world, 4, ghost, source=AWAY)
    assert known == unknown == ["InvalidGrant"] * 3 + ["TooManyAttempts"]
    assert world.limiter.count((ACCOUNT, ghost)) == world.limiter.count((ACCOUNT, EMAIL)) == 3


def test_the_account_key_is_the_normalised_email(world: World) -> None:
    world.sign_up(EMAIL)
    for spelling in ("ADA@example.test", " ada@EXAMPLE.test ", "Ada@Example.Test"):
        fail_logins(world, 1, spelling, source=None)
    assert outcome(world, login(source=None)) == "TooManyAttempts"
    assert world.limiter.count((ACCOUNT, EMAIL)) == 3


def test_one_locked_account_leaves_other_accounts_alone(world: World) -> None:
    world.sign_up(EMAIL)
    world.sign_up("grace@example.test")
    fail_logins(world, 3)
    assert outcome(world, login()) == "TooManyAttempts"
    assert outcome(world, login("grace@example.test")) == "ok"  # same address, 3 failures < 5


def test_a_locked_address_refuses_every_account_from_it(world: World) -> None:
    world.sign_up(EMAIL)
    for i in range(5):
        assert fail_logins(world, 1, f"guess-{i}@example.test") == ["InvalidGrant"]
    assert outcome(world, login()) == "TooManyAttempts"
    assert outcome(world, login(source=AWAY)) == "ok"
    assert world.limiter.count((ACCOUNT, EMAIL)) == 0


def test_a_disabled_user_with_the_right_password_counts_as_a_failure(world: World) -> None:
    user = world.app.load(world.sign_up(EMAIL).user.id, User)
    user.disable(actor="system")
    world.app.save(user)
    assert [outcome(world, login()) for _ in range(4)] == ["InvalidGrant"] * 3 + ["TooManyAttempts"]


def test_an_error_while_verifying_uncounts_the_attempt(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    world.sign_up(EMAIL)

    def broken(self: object, email: str) -> None:
        raise ConnectionError("store down")

    monkeypatch.setattr(type(world.tokens), "find_user", broken)
    with pytest.raises(ConnectionError):
        world.tokens.decide(login())
    assert world.limiter.count((ACCOUNT, EMAIL)) == 0 and world.limiter.count((ADDRESS, HOME)) == 0


def test_the_password_grant_fails_closed_when_the_limiter_is_down(world: World) -> None:
    world.sign_up(EMAIL)
    world.limiter.down = True
    with pytest.raises(TemporarilyUnavailable):
        world.tokens.decide(login())


def client_request(world: World, signed_up: object, secret: str | None = None, source: str | None = HOME,
                   ) -> TokenRequest:
    client = signed_up.client  # type: ignore[attr-defined]
    return TokenRequest(grant_type="client_credentials", client_id=client.client.client_id,
                        client_secret=secret if secret is not None else client.client_secret, source=source)


def test_client_authentication_locks_the_address_out_of_the_client_after_its_limit(world: World) -> None:
    """The guessing address is locked out of the client, even with the right secret; the client's own integration,
    elsewhere, is not: a client_id is public, and counted per client alone anyone could lock an API key out."""
    acme = world.sign_up(EMAIL)
    wrong = world.minter.client_secret()
    assert [outcome(world, client_request(world, acme, wrong)) for _ in range(3)] == ["InvalidClient"] * 3
    assert outcome(world, client_request(world, acme)) == "TooManyAttempts"
    with pytest.raises(TooManyAttempts):  # revocation and introspection authenticate the same way
        world.tokens.authenticate_client(client_request(world, acme))
    assert outcome(world, client_request(world, acme, source=AWAY)) == "ok"
    world.tokens.authenticate_client(client_request(world, acme, source=AWAY))
    assert outcome(world, client_request(world, acme)) == "TooManyAttempts"  # AWAY's success cleared only AWAY
    world.clock.advance(seconds=LIMITS.lockout)
    assert outcome(world, client_request(world, acme)) == "ok"


def test_malformed_and_missing_secrets_and_unknown_clients_count_too(world: World) -> None:
    acme = world.sign_up(EMAIL)
    for secret in ("malformed", ""):
        assert outcome(world, client_request(world, acme, secret)) == "InvalidClient"
    assert outcome(world, TokenRequest(grant_type="client_credentials", client_id=acme.client.client.client_id,
                                       source=HOME)) == "InvalidClient"
    assert outcome(world, client_request(world, acme)) == "TooManyAttempts"
    ghost = TokenRequest(grant_type="client_credentials", client_id="klc_nobody",
                         client_secret=world.minter.client_secret(), source=AWAY)
    assert [outcome(world, ghost) for _ in range(4)] == ["InvalidClient"] * 3 + ["TooManyAttempts"]


def test_the_public_dashboard_is_not_counted_as_a_client(world: World) -> None:
    world.sign_up(EMAIL)
    for _ in range(5):
        assert outcome(world, TokenRequest(grant_type="password", client_id="dashboard", client_secret="x",
                                           username=EMAIL, password=PASSWORD, source=HOME)) == "InvalidClient"
    # No client key, no address key: only the address's count of recorded refusals (which locks nothing).
    assert set(world.limiter.counters) == {("refusal", HOME)}


def test_a_batch_of_forty_wrong_secrets_admits_exactly_the_limit(world: World) -> None:
    acme, other = world.sign_up(EMAIL), world.sign_up("grace@example.test")
    wrong = world.minter.client_secret()
    batch = [client_request(world, acme, wrong) for _ in range(40)]
    batch += [client_request(world, acme), client_request(world, acme, source=AWAY),
              client_request(world, other, source=AWAY)]
    outcomes = [type(o).__name__ for o in world.tokens.decide_batch(batch)]
    assert outcomes == ["InvalidClient"] * 3 + ["TooManyAttempts"] * 38 + ["IssuedTokens"] * 2
    refused = world.tokens.decide_batch(batch[-3:-2])[0]
    assert isinstance(refused, TooManyAttempts) and refused.retry_after == LIMITS.lockout
    assert world.limiter.count(client_keys(acme.client.client.client_id, HOME)[0]) == 3


def test_a_batch_from_forty_addresses_locks_none_of_them_out_of_the_client(world: World) -> None:
    """One failure per address: no address reaches the limit at the client, and the client works everywhere."""
    acme = world.sign_up(EMAIL)
    wrong = world.minter.client_secret()
    batch = [client_request(world, acme, wrong, source=f"203.0.113.{i}") for i in range(40)]
    outcomes = [type(o).__name__ for o in world.tokens.decide_batch([*batch, client_request(world, acme)])]
    assert outcomes == ["InvalidClient"] * 40 + ["IssuedTokens"]


def test_a_batch_counts_the_address_across_clients(world: World) -> None:
    clients = [world.sign_up(f"user{i}@example.test") for i in range(3)]
    wrong = world.minter.client_secret()
    batch = [client_request(world, c, wrong) for c in clients for _ in range(2)]
    batch += [client_request(world, clients[0]), client_request(world, clients[0], source=AWAY)]
    outcomes = [type(o).__name__ for o in world.tokens.decide_batch(batch)]
    assert outcomes == ["InvalidClient"] * 5 + ["TooManyAttempts"] * 2 + ["IssuedTokens"]
    assert world.limiter.count((ADDRESS, HOME)) == 5


def test_a_batch_costs_one_read_and_writes_only_when_something_failed(world: World) -> None:
    acme = world.sign_up(EMAIL)
    good = [client_request(world, acme) for _ in range(10)]
    world.limiter.calls.clear()
    assert all(isinstance(o, IssuedTokens) for o in world.tokens.decide_batch(good))
    assert world.limiter.calls == ["budget"]
    world.limiter.calls.clear()
    world.tokens.decide_batch([*good, client_request(world, acme, "malformed")])
    assert world.limiter.calls == ["budget", "settle"]


def test_a_success_in_a_batch_clears_the_client_failures(world: World) -> None:
    acme = world.sign_up(EMAIL)
    wrong = world.minter.client_secret()
    world.tokens.decide_batch([client_request(world, acme, wrong) for _ in range(2)])
    key = client_keys(acme.client.client.client_id, HOME)[0]
    assert world.limiter.count(key) == 2
    outcomes = world.tokens.decide_batch([client_request(world, acme), client_request(world, acme, wrong)])
    assert [type(o).__name__ for o in outcomes] == ["IssuedTokens", "InvalidClient"]
    assert world.limiter.count(key) == 1
    assert world.limiter.count((ADDRESS, HOME)) == 3  # never cleared by a success


def test_a_batch_fails_closed_when_the_limiter_is_down(world: World) -> None:
    acme = world.sign_up(EMAIL)
    world.limiter.down = True
    outcomes = world.tokens.decide_batch([client_request(world, acme), client_request(world, acme)])
    assert [type(o) for o in outcomes] == [TemporarilyUnavailable] * 2
    assert outcomes[0] is not outcomes[1]


def test_the_budget_refuses_with_the_longest_remaining_lock() -> None:
    budget = AttemptBudget(LIMITS, counts={(CLIENT, "a"): 3, (ADDRESS, HOME): 5},
                           waits={(CLIENT, "a"): 10, (ADDRESS, HOME): 70})
    assert budget.refusal([(CLIENT, "a"), (ADDRESS, HOME)]) == 70
    assert budget.refusal([(CLIENT, "b"), (ADDRESS, AWAY)]) is None
    budget.fail([(CLIENT, "b")] * 3)
    assert budget.refusal([(CLIENT, "b")]) == LIMITS.lockout  # spent in this batch: locked once settled
    assert budget.dirty


def test_an_ipv6_address_is_counted_as_its_slash_64(world: World) -> None:
    """One host holds a whole /64: guesses from five of its addresses lock them all (and the rest of the /64) out,
    of every account and every client; another /64 is not locked. Per /128, each guess would have come from a
    fresh, never-counted address."""
    acme = world.sign_up(EMAIL)
    for i in range(5):
        assert fail_logins(world, 1, f"guess-{i}@example.test", source=f"2001:db8:1:2::{i + 1:x}") == ["InvalidGrant"]
    assert outcome(world, login(source="2001:db8:1:2:ffff:ffff:ffff:ffff")) == "TooManyAttempts"
    assert outcome(world, client_request(world, acme, source="2001:db8:1:2::abcd")) == "TooManyAttempts"
    assert outcome(world, login(source="2001:db8:1:3::1")) == "ok"


def test_a_neighbour_in_a_shared_slash_64_cannot_lock_an_integration_out_of_its_client(world: World) -> None:
    """The client's key is the full address: one address of a /64 guessing at a client is locked out of it, the
    client's integration at another address of the same /64 goes on (the /64's own limit bounds the guessing)."""
    acme = world.sign_up(EMAIL)
    wrong = world.minter.client_secret()
    guesses = [outcome(world, client_request(world, acme, wrong, source="2001:db8:9:9::66")) for _ in range(4)]
    assert guesses == ["InvalidClient"] * 3 + ["TooManyAttempts"]
    assert outcome(world, client_request(world, acme, source="2001:db8:9:9::1")) == "ok"
    assert world.limiter.count((ADDRESS, "2001:db8:9:9::/64")) == 3


@pytest.mark.parametrize(("source", "network"), [
    ("2001:DB8:1:2::9", "2001:db8:1:2::/64"),
    ("2001:0db8:0001:0002:0000:0000:0000:0009", "2001:db8:1:2::/64"),
    ("fe80::1%eth0", "fe80::/64"),
    ("::ffff:192.0.2.1", "192.0.2.1"),
    ("::FFFF:c000:0201", "192.0.2.1"),
    ("192.0.2.1", "192.0.2.1"),
    ("testclient", "testclient"),
    ("2001:db8::zz", "2001:db8::zz"),
])
def test_every_spelling_of_a_network_is_one_key(source: str, network: str) -> None:
    assert source_network(source) == network


def test_every_spelling_of_an_address_is_one_client_key(world: World) -> None:
    acme = world.sign_up(EMAIL)
    wrong = world.minter.client_secret()
    spellings = ["2001:db8:9:9::66", "2001:DB8:9:9:0:0:0:66", "2001:0db8:0009:0009::0066"]
    assert [outcome(world, client_request(world, acme, wrong, source=s)) for s in spellings] == ["InvalidClient"] * 3
    assert outcome(world, client_request(world, acme, source="2001:db8:9:9::66%eth0")) == "TooManyAttempts"


def test_an_ipv4_mapped_address_is_counted_as_its_ipv4_address(world: World) -> None:
    world.sign_up(EMAIL)
    for i in range(5):
        assert fail_logins(world, 1, f"guess-{i}@example.test", source=f"::ffff:{HOME}") == ["InvalidGrant"]
    assert outcome(world, login(source=HOME)) == "TooManyAttempts"
    assert world.limiter.count((ADDRESS, HOME)) == 5

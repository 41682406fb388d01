"""The attempt limiter on the real Redis: atomic counting under 40 parallel attempts, lock expiry, the batch
budget, key hygiene and failing closed; and the token endpoint's limits on the real stores."""

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from application.oauth.errors import InvalidClient, InvalidGrant, TemporarilyUnavailable, TooManyAttempts
from application.oauth.grants import TokenRequest
from application.oauth.limits import ACCOUNT, ADDRESS, CLIENT, AttemptBudget, AttemptLimits
from infrastructure.bootstrap import Container
from infrastructure.ratelimit import RedisAttemptLimiter, default_prefix
from tests.conftest import free_port
from tests.integration.support import PASSWORD, fresh_email, in_parallel, sign_up

pytestmark = pytest.mark.integration

PARALLEL = 40
LIMITS = AttemptLimits(per_account=10, per_client=10, per_address=50, window=60, lockout=600)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


@pytest.fixture
def make_limiter(client: redis.Redis) -> Iterator[Callable[..., RedisAttemptLimiter]]:
    """Limiters on a key prefix unique to the test (Redis db 0 is shared by the session); keys deleted after."""
    prefixes: list[str] = []

    def make(limits: AttemptLimits = LIMITS, prefix: str | None = None) -> RedisAttemptLimiter:
        prefixes.append(prefix or f"keyledger-test:{uuid.uuid4().hex}")
        return RedisAttemptLimiter(client, limits, prefix=prefixes[-1], key=b"k" * 32)

    yield make
    for prefix in prefixes:
        for key in client.scan_iter(match=f"{prefix}:*"):
            client.delete(key)


def outcome(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except Exception as exc:
        return exc


def test_forty_parallel_reservations_admit_exactly_the_limit(make_limiter: Callable[..., RedisAttemptLimiter],
                                                             client: redis.Redis) -> None:
    limiter = make_limiter()
    keys = [(ACCOUNT, fresh_email()), (ADDRESS, "192.0.2.1")]
    waits = in_parallel(PARALLEL, lambda _: limiter.reserve(keys))
    assert waits.count(None) == LIMITS.per_account
    assert all(wait is not None and 0 < wait <= LIMITS.lockout for wait in waits if wait is not None)
    assert int(client.get(limiter.redis_key(keys[0]))) == LIMITS.per_account
    assert int(client.get(limiter.redis_key(keys[1]))) == LIMITS.per_account  # refusals count nowhere
    # The reservation that reached the limit re-armed the counter for the lockout, longer than the window.
    assert LIMITS.window * 1000 < client.pttl(limiter.redis_key(keys[0])) <= LIMITS.lockout * 1000


def test_the_lock_ends_when_redis_expires_the_counter(make_limiter: Callable[..., RedisAttemptLimiter],
                                                      client: redis.Redis) -> None:
    limiter = make_limiter(AttemptLimits(per_account=2, per_address=50, window=30, lockout=1))
    keys = [(ACCOUNT, fresh_email())]
    assert limiter.reserve(keys) is None and limiter.reserve(keys) is None
    assert limiter.reserve(keys) == 1
    counter = limiter.redis_key(keys[0])
    assert 0 < client.pttl(counter) <= 1000
    wait_until_expired(client, counter)
    assert limiter.reserve(keys) is None
    assert int(client.get(counter)) == 1


def wait_until_expired(client: redis.Redis, key: str) -> None:
    """Waits on Redis's own TTL (not on a wall-clock duration) until ``key`` is gone."""
    for _ in range(1000):
        ttl = client.pttl(key)
        if ttl == -2:
            return
        threading.Event().wait(max(ttl, 1) / 1000)
    raise AssertionError(f"{key} never expired")


def test_release_uncounts_the_attempt_and_resets_only_what_it_is_told(
        make_limiter: Callable[..., RedisAttemptLimiter], client: redis.Redis) -> None:
    limiter = make_limiter()
    account, address = (ACCOUNT, fresh_email()), (ADDRESS, "192.0.2.2")
    for _ in range(3):
        limiter.reserve([account, address])  # three failures
    limiter.reserve([account, address])
    limiter.release([account, address], reset=[account])  # ...and a success
    assert client.exists(limiter.redis_key(account)) == 0
    assert int(client.get(limiter.redis_key(address))) == 3
    limiter.reserve([address])
    limiter.release([address])
    assert int(client.get(limiter.redis_key(address))) == 3
    limiter.release([(ADDRESS, "192.0.2.3")])  # nothing to uncount: no key appears
    assert client.exists(limiter.redis_key((ADDRESS, "192.0.2.3"))) == 0


def test_a_settled_batch_locks_and_the_next_budget_sees_the_lock(
        make_limiter: Callable[..., RedisAttemptLimiter], client: redis.Redis) -> None:
    limiter = make_limiter()
    locked, spared, fresh = (CLIENT, "klc_a"), (CLIENT, "klc_b"), (CLIENT, "klc_c")
    budget = limiter.budget([locked, spared, fresh])
    assert budget.counts == {} and budget.waits == {}
    budget.fail([locked] * PARALLEL)
    budget.fail([spared] * 4)
    limiter.settle(budget)
    assert int(client.get(limiter.redis_key(locked))) == PARALLEL
    assert LIMITS.window * 1000 < client.pttl(limiter.redis_key(locked)) <= LIMITS.lockout * 1000
    assert 0 < client.pttl(limiter.redis_key(spared)) <= LIMITS.window * 1000
    after = limiter.budget([locked, spared, fresh, locked])
    assert after.counts == {locked: PARALLEL, spared: 4}
    assert 0 < after.waits[locked] <= LIMITS.lockout and spared not in after.waits
    assert after.refusal([locked]) == after.waits[locked] and after.refusal([spared, fresh]) is None
    after.succeed(spared)
    after.fail([spared])
    limiter.settle(after)
    assert int(client.get(limiter.redis_key(spared))) == 1  # cleared, then the batch's later failure


def test_prefixes_keep_deployments_apart(make_limiter: Callable[..., RedisAttemptLimiter]) -> None:
    keys = [(ACCOUNT, fresh_email())]
    one, two = make_limiter(AttemptLimits(per_account=1)), make_limiter(AttemptLimits(per_account=1))
    assert one.reserve(keys) is None and one.reserve(keys) is not None
    assert two.reserve(keys) is None


def test_redis_holds_no_email_client_id_or_address(make_limiter: Callable[..., RedisAttemptLimiter],
                                                   client: redis.Redis) -> None:
    limiter = make_limiter()
    email, client_id, address = fresh_email(), "klc_visible", "192.0.2.77"
    limiter.reserve([(ACCOUNT, email), (ADDRESS, address)])
    budget = limiter.budget([(CLIENT, client_id)])
    budget.fail([(CLIENT, client_id)])
    limiter.settle(budget)
    prefix = limiter.redis_key((ACCOUNT, email)).split(":attempts:")[0]
    stored = [key.decode() for key in client.scan_iter(match=f"{prefix}:*")]
    assert len(stored) == 3
    for needle in (email, client_id, address):
        assert all(needle not in key for key in stored)
    assert {client.get(key) for key in stored} == {b"1"}


def test_an_unreachable_redis_fails_closed(client: redis.Redis) -> None:
    down = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    limiter = RedisAttemptLimiter(down, LIMITS, prefix="keyledger-test:down", key=b"k" * 32)
    with pytest.raises(TemporarilyUnavailable):
        limiter.reserve([(ACCOUNT, "a@example.test")])
    with pytest.raises(TemporarilyUnavailable):
        limiter.budget([(CLIENT, "klc_a")])
    limiter.release([(ACCOUNT, "a@example.test")])  # the verdict is taken: only logged
    limiter.settle(AttemptBudget(LIMITS, failures={(CLIENT, "klc_a"): 1}))  # type: ignore[arg-type]
    down.close()


def test_the_container_prefixes_keys_with_its_database(container: Container, database_url: str) -> None:
    limiter = container.tokens.limiter
    assert isinstance(limiter, RedisAttemptLimiter)
    assert limiter.redis_key((ACCOUNT, "x")).startswith(default_prefix(database_url) + ":attempts:account:")
    assert default_prefix(database_url).startswith("keyledger:keyledger_test_")


def test_forty_parallel_wrong_passwords_admit_at_most_the_limit(container: Container) -> None:
    """Through the token endpoint on PostgreSQL and Redis: the guesses are counted before argon2 runs, so at most
    ``per_account`` of 40 concurrent wrong passwords are even verified; then the right one is refused too."""
    email = sign_up(container).user.email
    limit = container.settings.attempt_limits.per_account

    def guess(i: int) -> Any:
        return outcome(lambda: container.tokens.decide(TokenRequest(
            grant_type="password", client_id="dashboard", username=email, password=f"guess {i}",
            source=f"198.51.100.{i}")))

    outcomes = in_parallel(PARALLEL, guess)
    assert sum(isinstance(o, InvalidGrant) for o in outcomes) == limit
    assert sum(isinstance(o, TooManyAttempts) for o in outcomes) == PARALLEL - limit
    right = outcome(lambda: container.tokens.decide(TokenRequest(
        grant_type="password", client_id="dashboard", username=email.upper(), password=PASSWORD, source="203.0.113.9")))
    assert isinstance(right, TooManyAttempts) and right.retry_after > 0


def client_request(client_id: str, secret: str, i: int) -> TokenRequest:
    """One of the parallel attempts (``i`` unused), all from one address: a client is locked per address it is
    tried from (``client_keys``)."""
    return TokenRequest(grant_type="client_credentials", client_id=client_id, client_secret=secret,
                        source="203.0.113.77")


@pytest.mark.parametrize("via_committer", [False, True], ids=["one-at-a-time", "group-committer"])
def test_forty_parallel_wrong_client_secrets_admit_at_most_the_limit(container: Container,
                                                                     via_committer: bool) -> None:
    """Both ways of authenticating a client: one at a time (revocation, introspection: counted before the check)
    and in the group committer's batches (client_credentials: a budget read per batch, exact in one process)."""
    limit = container.settings.attempt_limits.per_client
    signed = sign_up(container)
    client_id, secret = signed.client.client.client_id, signed.client.client_secret
    wrong = container.tokens.minter.client_secret()

    def authenticate(request: TokenRequest) -> Any:
        if via_committer:
            return outcome(lambda: container.committer.submit_request(request).result(timeout=30))
        return outcome(lambda: container.tokens.authenticate_client(request))

    outcomes = in_parallel(PARALLEL, lambda i: authenticate(client_request(client_id, wrong, i)))
    assert sum(isinstance(o, InvalidClient) for o in outcomes) == limit
    assert sum(isinstance(o, TooManyAttempts) for o in outcomes) == PARALLEL - limit
    assert isinstance(authenticate(client_request(client_id, secret, 99)), TooManyAttempts)
    other = sign_up(container)
    assert not isinstance(authenticate(client_request(other.client.client.client_id,
                                                      other.client.client_secret, 99)), Exception)

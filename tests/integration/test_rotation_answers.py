"""Rotations' answer instants in Redis (infrastructure.rotation_answers), shared by every API process."""

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from uuid import uuid4

import pytest
import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry

from infrastructure.bootstrap import Container
from infrastructure.rotation_answers import TTL, AsyncRedisRotationAnswers, RedisRotationAnswers
from tests.conftest import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url)
    yield connection
    for key in connection.scan_iter("keyledger-test:rotation-answers:*"):
        connection.delete(key)
    connection.close()


def test_an_answer_instant_is_read_back_exactly_by_another_client_and_expires(client: redis.Redis,
                                                                              redis_url: str) -> None:
    token_id, at = uuid4(), datetime(2026, 11, 29, 21, 30, 1, 123456, tzinfo=UTC)
    RedisRotationAnswers(client, prefix="keyledger-test:rotation-answers").answered(token_id, at)
    other = redis.Redis.from_url(redis_url)  # another API process
    try:
        reader = RedisRotationAnswers(other, prefix="keyledger-test:rotation-answers")
        assert reader.answered_at(token_id) == at
        assert reader.answered_at(uuid4()) is None
        assert RedisRotationAnswers(other, prefix="keyledger-test:another-deployment").answered_at(token_id) is None
    finally:
        other.close()
    key = f"keyledger-test:rotation-answers:rotation:{token_id.hex}"
    assert 0 < client.ttl(key) <= TTL


def test_an_unreachable_redis_neither_fails_the_refresh_nor_invents_an_instant() -> None:
    down = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    answers = RedisRotationAnswers(down, prefix="keyledger-test:down")
    answers.answered(uuid4(), datetime.now(UTC))  # only logged: the rotation is committed and owed its answer
    assert answers.answered_at(uuid4()) is None  # absent: the strict side
    down.close()


def test_the_container_records_answers_under_its_deployment_prefix(container: Container) -> None:
    answers = container.tokens.answers
    assert isinstance(answers, RedisRotationAnswers)
    token_id = uuid4()
    answers.answered(token_id, datetime.now(UTC))
    assert container.redis.exists(f"{container.namespace}:rotation:{token_id.hex}")


def test_the_event_loop_records_what_every_process_reads_back(client: redis.Redis, redis_url: str) -> None:
    """The token endpoint writes answers from its event loop: same key, same value, same lifetime as the decision
    side reads."""
    token_id, at = uuid4(), datetime(2026, 12, 6, 6, 0, 0, 654321, tzinfo=UTC)

    async def record() -> None:
        connection = redis.asyncio.Redis.from_url(redis_url)
        try:
            await AsyncRedisRotationAnswers(connection, prefix="keyledger-test:rotation-answers").answered(token_id, at)
        finally:
            await connection.aclose()

    asyncio.run(record())
    assert RedisRotationAnswers(client, prefix="keyledger-test:rotation-answers").answered_at(token_id) == at
    assert 0 < client.ttl(f"keyledger-test:rotation-answers:rotation:{token_id.hex}") <= TTL


def test_an_unreachable_redis_does_not_fail_the_loops_answer(caplog: pytest.LogCaptureFixture) -> None:
    async def record() -> None:
        down = redis.asyncio.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1,
                                   retry=redis.asyncio.retry.Retry(NoBackoff(), 0))
        try:
            await AsyncRedisRotationAnswers(down, prefix="keyledger-test:down").answered(uuid4(), datetime.now(UTC))
        finally:
            await down.aclose()

    asyncio.run(record())  # only logged: the rotation is committed and owed its answer
    assert "could not record a rotation's answer instant: ConnectionError" in caplog.text

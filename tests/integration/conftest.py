"""Fixtures of the integration tests that need a database of their own."""

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from infrastructure.bootstrap import Container, Endpoints, build
from infrastructure.settings import Settings
from tests.conftest import fresh_database
from tests.integration.fast_support import Harness
from workers.broker import make_broker
from workers.runtime import declare


@contextlib.contextmanager
def isolated_container(server_url: str, redis_url: str, settings: Settings) -> Iterator[Container]:
    """A whole process on a fresh database, projections NOT running (the test drives them)."""
    with fresh_database(server_url) as url:
        built = build(settings, Endpoints(database_url=url, redis_url=redis_url), migrate=True)
        try:
            yield built
        finally:
            built.close()


@pytest.fixture(scope="module")
def quiet_container(server_url: str, redis_url: str, settings: Settings) -> Iterator[Container]:
    """A container on a database no other test writes to, with no background projection."""
    with isolated_container(server_url, redis_url, settings) as built:
        yield built


@pytest.fixture
def broker(container: Container, redis_url: str) -> Iterator[Any]:
    """A Dramatiq broker with every job declared against the session container; only this deployment's keys are
    flushed, before and after."""
    built = make_broker(redis_url, namespace=container.namespace)
    declare(built, container)
    built.flush_all()
    yield built
    built.flush_all()
    built.close()


@pytest.fixture
def harness(container: Container, database_url: str, redis_url: str) -> Iterator[Harness]:
    built = Harness(container, database_url, redis_url)
    yield built
    built.close()

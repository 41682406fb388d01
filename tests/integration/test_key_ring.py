"""The signing-key ring: one key for every process, created once even by racing processes, encrypted at rest."""

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag

from application.oauth.grants import TokenRequest
from application.store import Keyledger
from domain.ids import keyring_id
from domain.keyring import KeyRing
from infrastructure.bootstrap import Container, Endpoints, build
from infrastructure.crypto.hashing import derive_key
from infrastructure.crypto.keys import SigningKeyFactory
from infrastructure.postgres import eventsourcing_env
from infrastructure.settings import Settings
from tests.conftest import SECRET_KEY, fresh_database
from tests.integration.support import notifications, sign_up, state

pytestmark = pytest.mark.integration

KEY_CREATED = "domain.keyring:KeyRing.SigningKeyCreated"


def key_events(container: Container) -> list[Any]:
    return [n for n in notifications(container) if n.topic == KEY_CREATED]


@pytest.fixture
def second(settings: Settings, endpoints: Endpoints) -> Iterator[Container]:
    built = build(settings, endpoints)
    yield built
    built.close()


def test_a_second_process_reuses_the_active_key(container: Container, second: Container) -> None:
    assert second.keys.snapshot.active_kid == container.keys.snapshot.active_kid
    assert len(key_events(container)) == 1
    assert len(container.app.load(keyring_id(), KeyRing).keys) == 1
    signed = sign_up(second)
    issued = second.tokens.handle(TokenRequest(grant_type="client_credentials",
                                               client_id=signed.client.client.client_id,
                                               client_secret=signed.client.client_secret))
    # A token signed by one process validates in the other.
    assert container.validator.validate(issued.access_token)["client_id"] == signed.client.client.client_id


def race_builds(settings: Settings, endpoints: Endpoints, racers: int, *, migrate: bool) -> list[Any]:
    """Starts ``racers`` builds at once; returns each one's container or exception."""
    barrier = threading.Barrier(racers)
    outcomes: list[Container | BaseException] = []

    def race() -> None:
        barrier.wait(timeout=10)
        try:
            outcomes.append(build(settings, endpoints, migrate=migrate))
        except BaseException as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=race) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


def check_one_shared_key(outcomes: list[Any], racers: int) -> None:
    built = [o for o in outcomes if isinstance(o, Container)]
    try:
        assert len(built) == racers, [repr(o) for o in outcomes if not isinstance(o, Container)]
        assert len({c.keys.snapshot.active_kid for c in built}) == 1, "racing processes sign with different keys"
        assert len(key_events(built[0])) == 1
        ring = built[0].app.load(keyring_id(), KeyRing)
        assert list(ring.keys) == [built[0].keys.snapshot.active_kid]
    finally:
        for container in built:
            container.close()


def test_racing_first_builds_create_exactly_one_key(server_url: str, redis_url: str, settings: Settings) -> None:
    """Two processes started at once on a fresh database (``keyledger serve`` always migrates)."""
    with fresh_database(server_url) as url:
        endpoints = Endpoints(database_url=url, redis_url=redis_url)
        check_one_shared_key(race_builds(settings, endpoints, 2, migrate=True), 2)


def test_racing_key_installs_create_exactly_one_key(server_url: str, redis_url: str, settings: Settings) -> None:
    """Tables exist but no key yet: every racer tries to save version 1 of the ring, one wins, all use its key."""
    with fresh_database(server_url) as url:
        Keyledger(env=eventsourcing_env(url, pool_size=2, create_table=True)).close()
        endpoints = Endpoints(database_url=url, redis_url=redis_url)
        check_one_shared_key(race_builds(settings, endpoints, 4, migrate=False), 4)


def test_the_private_key_is_stored_encrypted(container: Container) -> None:
    (created,) = key_events(container)
    assert b"PRIVATE KEY" not in created.state and b"BEGIN" not in created.state
    data = state(created)
    kid = data["kid"]
    assert kid == container.keys.snapshot.active_kid
    right = SigningKeyFactory(derive_key(SECRET_KEY.encode(), "keyledger signing key encryption v1"))
    wrong = SigningKeyFactory(derive_key(b"another-server-key-" + b"x" * 40, "keyledger signing key encryption v1"))
    assert right.decrypt(kid, data["encrypted_private_key"]).public_key() is not None
    with pytest.raises(InvalidTag):
        wrong.decrypt(kid, data["encrypted_private_key"])


def test_a_build_with_another_server_key_refuses_to_start(container: Container, endpoints: Endpoints) -> None:
    other = Settings(secret_key="another-server-key-" + "x" * 40, issuer=container.settings.issuer)
    with pytest.raises(InvalidTag):
        build(other, endpoints)
    assert len(key_events(container)) == 1, "a process with the wrong key installed a key of its own"

"""A process on a host whose clock is off keeps time by the database's clock (``infrastructure.clock``), on real
PostgreSQL: the tokens it issues and the events it records carry the database's time, and it judges expiry by it,
so a token whose revocation entry the database has pruned (``workers.expiry.PRUNE_MARGIN`` after its expiry by the
database's clock) is never taken for live again by a host that runs behind."""

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest

from application.oauth.grants import TokenRequest
from domain import entity
from infrastructure import bootstrap
from infrastructure.bootstrap import Container, database_clock
from infrastructure.clock import DatabaseClock
from infrastructure.crypto.jwt import InvalidToken, JwtSigner
from infrastructure.settings import Settings
from tests.integration.conftest import isolated_container
from tests.integration.support import sign_up

pytestmark = pytest.mark.integration

LAG = 600.0  # seconds the host's clock runs behind the database's: twice the revocation list's prune margin


@contextlib.contextmanager
def lagging_process(server_url: str, redis_url: str, settings: Settings) -> Iterator[Container]:
    """A whole process whose host clock runs ``LAG`` seconds behind the database's. Neither real clock can be moved,
    so the process reads the database's clock ``LAG`` seconds ahead: what it then does on the host's clock (the
    real one) and on the database's (``LAG`` ahead of it) is what a lagging host would do."""
    @contextlib.contextmanager
    def ahead(app: Any) -> Iterator[Callable[[], float]]:
        with database_clock(app) as read:
            yield lambda: read() + LAG

    with contextlib.ExitStack() as stack:
        with pytest.MonkeyPatch.context() as patch:  # only while it is built: the container binds its reader then
            patch.setattr(bootstrap, "database_clock", ahead)
            built = stack.enter_context(isolated_container(server_url, redis_url, settings))
        yield built


@pytest.fixture(scope="module")
def lagging(server_url: str, redis_url: str, settings: Settings) -> Iterator[Container]:
    """A lagging process (``lagging_process``) for the module's tests. While it is open its clock stamps every
    event this test process records (``domain.entity``: the newest container's binding), so no test here records
    events through another container."""
    with lagging_process(server_url, redis_url, settings) as built:
        yield built


def test_a_host_measures_how_far_its_clock_is_from_the_database_servers(container: Container) -> None:
    """The database server runs on this machine's clock: a host clock ``LAG`` behind it measures ``LAG``, give or
    take how long the measurement took (a bracket, not a fixed tolerance)."""
    clock = DatabaseClock(wall=lambda: time.time() - LAG)
    before = time.monotonic()
    offset = clock.calibrate(lambda: database_clock(container.app))
    assert abs(offset - LAG) <= time.monotonic() - before


def test_a_lagging_process_keeps_the_databases_time(lagging: Container) -> None:
    assert lagging.clock.offset == pytest.approx(LAG, abs=LAG / 10)  # 0 if it had not measured
    assert lagging.clock.time() - time.time() == pytest.approx(LAG, abs=LAG / 10)  # the host's clock if unmeasured


def client_token(container: Container) -> str:
    """A client_credentials access token of a new project's client."""
    signed = sign_up(container)
    return container.tokens.handle(TokenRequest(grant_type="client_credentials",
                                                client_id=signed.client.client.client_id,
                                                client_secret=signed.client.client_secret)).access_token


def test_a_lagging_host_issues_tokens_on_the_databases_time_and_accepts_them(lagging: Container) -> None:
    before = lagging.clock.time()
    token = client_token(lagging)
    after = lagging.clock.time()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert int(before) <= claims["iat"] <= after  # the database's time: in the host's future
    assert claims["iat"] > time.time() + LAG / 2
    assert lagging.validator.validate(token)["jti"] == claims["jti"]


def test_a_lagging_host_refuses_a_token_expired_by_the_databases_clock(lagging: Container) -> None:
    now = int(time.time() + LAG)  # the database's clock
    expired, _ = JwtSigner(lagging.keys).signed({
        "iss": lagging.settings.issuer, "aud": lagging.settings.audience, "sub": "klc_x", "client_id": "klc_x",
        "iat": now - 900, "exp": now - 360, "jti": str(uuid.uuid4())})  # still in the future by the host's clock
    with pytest.raises(InvalidToken, match="ExpiredSignatureError"):
        lagging.validator.validate(expired)


def test_a_lagging_host_stamps_the_events_it_records_with_the_databases_time(lagging: Container) -> None:
    """An event's timestamp is the audit ledger's ``occurred_at``: on the host's clock, a lagging host would file
    what it decides ``LAG`` in the past."""
    before = lagging.clock.now()
    token = client_token(lagging)
    after = lagging.clock.now()
    jti = uuid.UUID(jwt.decode(token, options={"verify_signature": False})["jti"])
    stored = lagging.app.repository.get(jti)  # read back from the store: the recorded timestamp
    assert before <= stored.created_on <= after
    assert stored.created_on.timestamp() > time.time() + LAG / 2  # in the host's future


def test_a_process_stamps_events_by_its_clock_until_it_is_closed(server_url: str, redis_url: str,
                                                                 settings: Settings,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(entity, "_bound", ())  # whatever other tests left open: only this process's binding counts
    with lagging_process(server_url, redis_url, settings):
        assert entity.event_timestamp().timestamp() > time.time() + LAG / 2
    before = datetime.now(UTC)  # the host's clock as eventsourcing reads it (whole microseconds, as it rounds)
    assert before <= entity.event_timestamp() <= datetime.now(UTC)  # the host's clock again

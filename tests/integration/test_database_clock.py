"""A process on a host whose clock is off keeps time by the database's clock (``infrastructure.clock``), on real
PostgreSQL: the tokens it issues carry the database's time, and it judges expiry by it, so a token whose revocation
entry the database has pruned (``workers.expiry.PRUNE_MARGIN`` after its expiry by the database's clock) is never
taken for live again by a host that runs behind."""

import time
import uuid
from collections.abc import Iterator

import jwt
import pytest

from application.oauth.grants import TokenRequest
from infrastructure import bootstrap
from infrastructure.bootstrap import Container, database_time
from infrastructure.clock import DatabaseClock
from infrastructure.crypto.jwt import InvalidToken, JwtSigner
from infrastructure.settings import Settings
from tests.integration.conftest import isolated_container
from tests.integration.support import sign_up

pytestmark = pytest.mark.integration

LAG = 600.0  # seconds the host's clock runs behind the database's: twice the revocation list's prune margin


@pytest.fixture(scope="module")
def lagging(server_url: str, redis_url: str, settings: Settings) -> Iterator[Container]:
    """A whole process whose host clock runs ``LAG`` seconds behind the database's. Neither real clock can be moved,
    so the process reads the database's clock ``LAG`` seconds ahead: what it then does on the host's clock (the
    real one) and on the database's (``LAG`` ahead of it) is what a lagging host would do."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bootstrap, "database_time", lambda app: database_time(app) + LAG)
        with isolated_container(server_url, redis_url, settings) as built:
            yield built


def test_a_host_measures_how_far_its_clock_is_from_the_database_servers(container: Container) -> None:
    clock = DatabaseClock(wall=lambda: time.time() - LAG)
    assert clock.calibrate(lambda: database_time(container.app)) == pytest.approx(LAG, abs=1)
    assert abs(clock.time() - time.time()) < 1  # the database server runs on this machine's clock


def test_a_lagging_process_keeps_the_databases_time(lagging: Container) -> None:
    assert lagging.clock.offset == pytest.approx(LAG, abs=1)
    assert lagging.clock.time() - time.time() == pytest.approx(LAG, abs=1)


def test_a_lagging_host_issues_tokens_on_the_databases_time_and_accepts_them(lagging: Container) -> None:
    signed = sign_up(lagging)
    token = lagging.tokens.handle(TokenRequest(grant_type="client_credentials",
                                               client_id=signed.client.client.client_id,
                                               client_secret=signed.client.client_secret)).access_token
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iat"] - time.time() == pytest.approx(LAG, abs=5)  # in the host's future
    assert lagging.validator.validate(token)["jti"] == claims["jti"]


def test_a_lagging_host_refuses_a_token_expired_by_the_databases_clock(lagging: Container) -> None:
    now = int(time.time() + LAG)  # the database's clock
    expired, _ = JwtSigner(lagging.keys).signed({
        "iss": lagging.settings.issuer, "aud": lagging.settings.audience, "sub": "klc_x", "client_id": "klc_x",
        "iat": now - 900, "exp": now - 360, "jti": str(uuid.uuid4())})  # still in the future by the host's clock
    with pytest.raises(InvalidToken, match="ExpiredSignatureError"):
        lagging.validator.validate(expired)

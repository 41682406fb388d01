"""A revocation is refused everywhere the instant it commits: the recorder lists the token in ``revoked_tokens`` in
the transaction of its ``TokenRevoked``, so no reader depends on the token lookup projection having run."""

from psycopg.rows import tuple_row

from application.oauth.grants import TokenRequest
from application.oauth.revocation import RevocationRequest
from infrastructure.bootstrap import Container
from tests.integration.support import head, sign_up


def test_a_revoked_token_is_refused_before_the_projection_runs(quiet_container: Container) -> None:
    container = quiet_container  # no projection runs in this container: the lookup model never moves
    account = sign_up(container)
    client = account.client.client
    issued = container.tokens.handle(TokenRequest(grant_type="client_credentials", client_id=client.client_id,
                                                  client_secret=account.client.client_secret))
    token = container.revocation.finder.find(issued.access_token)
    assert token is not None and not container.lookup.is_revoked(token.id)

    container.revocation.handle(client, RevocationRequest(token=issued.access_token, token_type_hint=None))

    assert container.lookup.position() < head(container)  # the model has not seen the revocation
    assert container.lookup.is_revoked(token.id)


def test_the_list_and_the_event_commit_together(quiet_container: Container) -> None:
    container = quiet_container
    account = sign_up(container)
    client = account.client.client
    issued = container.tokens.handle(TokenRequest(grant_type="client_credentials", client_id=client.client_id,
                                                  client_secret=account.client.client_secret))
    container.revocation.handle(client, RevocationRequest(token=issued.access_token, token_type_hint=None))
    with container.app.recorder.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as curs:
        listed = {row[0] for row in curs.execute("SELECT token_id FROM revoked_tokens").fetchall()}
        revoked = {row[0] for row in curs.execute(
            "SELECT originator_id FROM keyledger_events WHERE topic = 'domain.token:Token.TokenRevoked'").fetchall()}
    assert listed == revoked and listed

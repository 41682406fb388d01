"""A batch of logouts reads the token lookup model's families and the streams it decides on in one statement
(``projections.family_reads``): the same selections as ``families_as_of``, and the events of exactly the selected
tokens and the presented tokens' parents."""

from itertools import pairwise
from uuid import UUID

from application.oauth.grants import TokenRequest
from application.ports import FamilySelection
from domain.ids import DASHBOARD_CLIENT_ID, refresh_token_aggregate_id
from domain.token import Token
from infrastructure.bootstrap import Container
from projections.family_reads import FamilyReads
from tests.integration.support import PASSWORD, sign_up


def test_one_read_gives_the_models_families_and_the_streams_they_name(container: Container) -> None:
    account = sign_up(container)
    login = container.tokens.handle(TokenRequest(grant_type="password", client_id=DASHBOARD_CLIENT_ID,
                                                 username=account.user.email, password=PASSWORD))
    rotated = container.tokens.handle(TokenRequest(grant_type="refresh_token", client_id=DASHBOARD_CLIENT_ID,
                                                   refresh_token=login.refresh_token))
    presented = refresh_token_aggregate_id(container.tokens.secrets.hash(rotated.refresh_token or ""))
    container.lookup.wait_for(container.app.recorder.max_notification_id() or 0)
    reads = FamilyReads(container.lookup, container.app.recorder.events_table_name)

    selections, stored = reads.read([presented])

    assert same(selections, container.lookup.families_as_of([presented]))
    selection = selections[presented]
    assert selection.parent_id is not None and selection.parent_id not in selection.live  # used up by the rotation
    streams = [event.originator_id for event in stored]
    assert set(streams) == {*selection.live, selection.parent_id}
    runs = [token_id for i, token_id in enumerate(streams) if i == 0 or streams[i - 1] != token_id]
    assert len(runs) == len(set(runs))  # grouped by stream, as a replay needs them
    assert all(a.originator_version < b.originator_version for a, b in pairwise(stored)
               if a.originator_id == b.originator_id)
    replayed = container.app.replayed(stored, Token)
    for token_id in (*selection.live, selection.parent_id):
        assert replayed[token_id].version == container.app.load(token_id, Token).version


def test_a_token_the_model_does_not_hold_reads_nothing(container: Container) -> None:
    reads = FamilyReads(container.lookup, container.app.recorder.events_table_name)
    unknown = refresh_token_aggregate_id(container.tokens.secrets.hash("klrt_not-a-token"))

    assert reads.read([unknown]) == ({}, [])
    assert reads.read([]) == ({}, [])


def same(a: dict[UUID, FamilySelection], b: dict[UUID, FamilySelection]) -> bool:
    """Equal selections, whatever the order of each family's live tokens."""
    return {k: (s.family_id, s.parent_id, frozenset(s.live)) for k, s in a.items()} == {
        k: (s.family_id, s.parent_id, frozenset(s.live)) for k, s in b.items()}

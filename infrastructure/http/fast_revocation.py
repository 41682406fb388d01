"""RFC 7009 revocation on the event loop: a known client revoking one of its own client_credentials access tokens.

That is what a project's API key does when it is done with a token, and the whole request can be answered without
a thread: the client is one whose presented secret this process verified before (``FastIntrospection``'s known
clients, with the same clean failure counters), the token is a JWT that validates strictly against this process's
key snapshot and names this client and its project, and the group committer decides it with the batch it joins
(``application.oauth.client_revocation``: one read of the stream versions, the ``TokenRevoked`` in the batch's
transaction, which also lists the token in ``revoked_tokens``). The answer waits for that commit, so every process
refuses the token the moment it is answered (DESIGN.md invariant 1). Anything else returns False and takes the
general path, which authenticates with counting and decides on the token's loaded stream.
"""

import asyncio
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from application.oauth.client_revocation import ClientTokenRevocation, RevocationOutcome
from domain.client import Client
from infrastructure.crypto.jwt import InvalidToken, UnknownKey
from infrastructure.http.introspection import FastIntrospection


async def revoke_known(fast: FastIntrospection, container: Any, credentials: tuple[str | None, str | None],
                       token: str | None, source: str | None) -> bool:
    """Revokes ``token`` for the client of ``credentials`` if this path applies; False for the general path."""
    request = _request(fast, container, credentials, token)
    if request is None or not await fast.no_failures(request.client.client_id, source):
        return False
    try:
        outcome: RevocationOutcome = await asyncio.wrap_future(container.committer.submit_request(request))
    except IntegrityError:
        return False  # a racing revocation or sweep moved the stream first: the general path sees it
    return outcome.decided


def _request(fast: FastIntrospection, container: Any, credentials: tuple[str | None, str | None],
             token: str | None) -> ClientTokenRevocation | None:
    """The batched request for a live JWT of the known client's own, or None (no I/O)."""
    if not token or container.tokens.minter.is_refresh_token(token):
        return None
    client = fast.known_client(*credentials)
    if client is None:
        return None
    try:
        claims, _ = container.validator.peek(token)
    except (InvalidToken, UnknownKey):
        return None  # expired, unknown key, not ours: the general path decides (and answers 200 where due)
    token_id = _own_token_id(claims, client)
    if token_id is None:
        return None
    return ClientTokenRevocation(client=client, token_id=token_id,
                                 expires_at=datetime.fromtimestamp(claims["exp"], tz=UTC))


def _own_token_id(claims: dict[str, Any], client: Client) -> UUID | None:
    """The jti of a client_credentials token of ``client`` (its client, subject and project), else None: another
    client's token is refused by the general path, a dashboard token is not this path's."""
    own = (claims.get("client_id"), claims.get("sub"), claims.get("project_id"))
    if own != (client.client_id, client.client_id, str(client.project_id)):
        return None
    try:
        return UUID(str(claims["jti"]))
    except (KeyError, ValueError):
        return None

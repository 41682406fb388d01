"""RFC 7009 revocation on the event loop: a known client revoking one of its own client_credentials access tokens,
and the dashboard revoking one of its access tokens or ending a login (one of its refresh tokens).

That is what a project's API key does when it is done with a token, and the whole request can be answered without
a thread: the client is one whose presented secret this process verified before (``FastIntrospection``'s known
clients, with the same clean failure counters), and the group committer decides the revocation with the batch it
joins (``application.oauth.client_revocation``: the token's stream, named by the presented JWT's ``jti``, decides
whether it is this client's and live; its ``TokenRevoked`` is saved in the batch's transaction, which also lists the
token in ``revoked_tokens``). The answer waits for that commit, so every process refuses the token the moment it is
answered (DESIGN.md invariant 1). For a client authenticated by its secret, the string is only read for its
``jti`` and ``client_id``, to pick the stream and skip what is plainly not this client's: nothing in it is trusted,
so it needs no signature check here. One difference with the general path follows: a string that does not verify
(a forged signature, say) but names one of the caller's own live tokens revokes that token here, where the general
path would answer 200 and change nothing. The caller is authenticated as that token's client and could revoke it
anyway; the ledger records it as such.

The dashboard, a public client (``client_id=dashboard`` and no secret), revokes its users' access tokens here too,
but it has no secret to prove anything: for it the presented string is the proof. A login's access token records
its keyed hash when issued, so the batch revokes it only if the presented string's keyed hash is that one: the
string is then the very token issued, which a signature check (an ECDSA verification, a third of such a request's
cost) could not make surer. Any other string (a forged or altered one, another token's) and a token recorded without
a hash take the general path, which verifies strictly and answers as RFC 7009 says.

A dashboard logout, the revocation of one of its refresh tokens, is batched too
(``application.oauth.family_revocation``): the opaque token's keyed hash names its stream, which only the token's
holder can name, and the batch revokes the login's family when the token is live and the token lookup model holds
its row; any other refresh token takes the general path.

Anything else returns False and takes the general path, which authenticates the client (counting a confidential
client's failures), verifies the token strictly and decides on its stream. So does a non-ASCII string, which no
token of ours is.
"""

import json
from typing import Any

from eventsourcing.persistence import IntegrityError
from jwt.utils import base64url_decode

from application.oauth.client_revocation import ClientTokenRevocation, RevocationOutcome
from application.oauth.family_revocation import FamilyRevocation
from domain.client import DASHBOARD
from domain.ids import refresh_token_aggregate_id
from infrastructure.http.introspection import FastIntrospection, token_id_of

JWS_PARTS = 3
MAX_TOKEN_LENGTH = 4096  # our access tokens are well under 1 KiB; anything longer is not one of them


async def revoke_known(fast: FastIntrospection, container: Any, credentials: tuple[str | None, str | None],
                       token: str | None, source: str | None) -> bool:
    """Revokes ``token`` for the client of ``credentials`` if this path applies; False for the general path."""
    request = _request(fast, container, credentials, token)
    if request is None or not await fast.no_failures(request.client.client_id, source):
        return False
    try:
        outcome: RevocationOutcome = await container.committer.decided(request)
    except IntegrityError:
        return False  # a racing revocation or sweep moved the stream first: the general path sees it
    return outcome.decided


def _request(fast: FastIntrospection, container: Any, credentials: tuple[str | None, str | None],
             token: str | None) -> ClientTokenRevocation | FamilyRevocation | None:
    """The batched request for what looks like a JWT of the known client's, for what looks like a dashboard access
    token (its keyed hash is checked in the batch), or for a dashboard refresh token (a logout), or None (no I/O)."""
    if not token or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
        return None
    if credentials == (DASHBOARD.client_id, None):
        return _dashboard_request(container, token)
    if container.tokens.minter.is_refresh_token(token):
        return None  # presented by a confidential client: the general path answers
    client = fast.known_client(*credentials)
    if client is None:
        return None
    claims = _unverified_claims(token)
    if claims is None or claims.get("client_id") != client.client_id:
        return None  # not a JWT, or another client's (refused by the general path)
    token_id = token_id_of(claims)
    return ClientTokenRevocation(client=client, token_id=token_id) if token_id is not None else None


def _dashboard_request(container: Any, token: str) -> ClientTokenRevocation | FamilyRevocation | None:
    """The batched request for a dashboard refresh token (a logout) or for what looks like a dashboard access token
    (the batch checks the string's keyed hash against the one its issuance recorded), or None (no I/O). A string
    whose header names no key of this process's snapshot is not queued: the committer's thread, which issues tokens
    too, reads no stream for garbage (a key another process just published takes the general path)."""
    if container.tokens.minter.is_refresh_token(token):
        # A logout: the keyed hash names the stream; only the token's holder can name it (see the module).
        return FamilyRevocation(client=DASHBOARD,
                                token_id=refresh_token_aggregate_id(container.tokens.secrets.hash(token)))
    if not container.validator.names_published_key(token):
        return None
    claims = _unverified_claims(token)
    if claims is None or claims.get("client_id") != DASHBOARD.client_id:
        return None
    token_id = token_id_of(claims)
    if token_id is None:
        return None
    return ClientTokenRevocation(client=DASHBOARD, token_id=token_id, value_hash=container.tokens.secrets.hash(token))


def _unverified_claims(token: str) -> dict[str, Any] | None:
    """The payload of a compact JWS, unverified: only a name for the stream that decides (see the module)."""
    parts = token.split(".")
    if len(parts) != JWS_PARTS:
        return None
    try:
        payload = json.loads(base64url_decode(parts[1]))
    except (ValueError, RecursionError):  # binascii.Error is a ValueError; RecursionError: a deeply nested payload
        return None
    return payload if isinstance(payload, dict) else None

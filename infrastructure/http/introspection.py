"""RFC 7662 introspection of a JWT access token on the event loop, for a client whose secret this process knows
(and the same client authentication for RFC 7009 revocation).

Resource servers introspect the same few client credentials thousands of times a second. The general path (a worker
thread: count the attempt in Redis before checking the secret, load the client, load the token's stream, uncount the
attempt) costs four round trips and a thread hand-off. This path answers with two, issued concurrently and without a
thread: one query for the client's stream version and the token's revocation status, one Redis read of the client's
and the address's failure counters. It applies only when everything is known to be in order, and otherwise returns
None so that the general path decides (and counts, refuses or resets as it always does):

- the client id and presented secret's keyed hash were verified by the general path of this process, on a private
  copy of the client whose version is still the stream's version, and the secret is still live on that copy now
  (a presented secret that was never verified always takes the counted path, so guessing is limited as before);
- neither the client (from this address) nor the address has failures counted (a lock refuses even the right
  secret; a success must clear the client's failures), as read from Redis at most CLEAN_FOR seconds ago;
- the token is not a refresh token (those are decided on their stream) and, if it is a JWT that validates
  strictly, it belongs to the client's project (dashboard tokens need the project's membership: general path);
  anything else that is not a valid access token is inactive, as the general path would say.

The token's facts come from its verified claims, its liveness from the ``revoked_tokens`` list (written in the
transaction of each revocation, DESIGN.md invariant 1) and the token lookup model, exactly as every ``/v1`` request
checks it; the key snapshot it was checked against must be the ring's version read in the same query.
"""

import asyncio
import threading
import time
from typing import Any
from uuid import UUID

import redis.asyncio

from application.oauth.limits import client_keys
from domain.client import Client
from domain.ids import DASHBOARD_CLIENT_ID, client_aggregate_id
from infrastructure.crypto.jwt import InvalidToken, UnknownKey
from infrastructure.http.gate import RequestGate

INACTIVE: dict[str, Any] = {"active": False}
CLEAN_FOR = 1.0  # seconds a clean read of a known client's failure counters is trusted
CACHE_LIMIT = 16_384


class KnownClients:
    """Private copies of clients whose presented secret (by keyed hash) the general path verified."""

    def __init__(self, capacity: int = 4096) -> None:
        self._capacity = capacity
        self._items: dict[str, tuple[Client, frozenset[str]]] = {}
        self._lock = threading.Lock()

    def get(self, client_id: str, secret_hash: str) -> Client | None:
        """The copy, if this secret hash verified against it."""
        entry = self._items.get(client_id)
        return entry[0] if entry is not None and secret_hash in entry[1] else None

    def remember(self, client: Client, secret_hash: str) -> None:
        """Records that ``secret_hash`` verified against ``client`` (a private copy, never mutated)."""
        with self._lock:
            entry = self._items.get(client.client_id)
            hashes = {secret_hash}
            if entry is not None and entry[0].version == client.version:
                hashes |= entry[1]
            if len(self._items) >= self._capacity:
                self._items.clear()
            self._items[client.client_id] = (client, frozenset(hashes))


class FastIntrospection:
    """The event-loop path (see the module docstring)."""

    def __init__(self, container: Any, *, gate: RequestGate, redis_client: redis.asyncio.Redis) -> None:
        self._container = container
        self._gate = gate
        self._redis = redis_client
        self.known = KnownClients()
        self._clean_until: dict[tuple[str, str | None], float] = {}

    def secret_hash(self, secret: str) -> str:
        """The keyed hash the client aggregate stores."""
        return str(self._container.tokens.secrets.hash(secret))

    def known_client(self, client_id: str | None, secret: str | None) -> Client | None:
        """The private copy of a client whose presented secret this process verified, if still live on it now (no
        I/O; the stream's version and the failure counters are checked by ``_confirm``)."""
        if not client_id or not secret or client_id == DASHBOARD_CLIENT_ID:
            return None
        secret_hash = self.secret_hash(secret)
        client = self.known.get(client_id, secret_hash)
        if client is None or not client.secret_matches(secret_hash, self._container.tokens.clock.now()):
            return None
        return client

    async def authenticate(self, client_id: str | None, secret: str | None, source: str | None) -> Client | None:
        """The known client these credentials authenticate, or None for the general path."""
        client = self.known_client(client_id, secret)
        if client is None:
            return None
        confirmed, _ = await self._confirm(client, source, token_id=None, ring_version=None)
        return client if confirmed else None

    async def answer(self, client_id: str | None, secret: str | None, token: str | None,
                     source: str | None) -> dict[str, Any] | None:
        """The introspection response, or None when the general path must decide."""
        if not token or self._container.tokens.minter.is_refresh_token(token):
            return None  # a refresh token is decided on its own stream
        client = self.known_client(client_id, secret)
        if client is None:
            return None  # authenticated first: no signature check for callers this process does not know
        try:
            claims, ring_version = self._container.validator.peek(token)
        except UnknownKey:
            return None  # maybe a key another process just published: the general path checks the ring
        except InvalidToken:
            claims, ring_version = None, self._container.validator.keys.snapshot.version
        token_id = token_id_of(claims)
        confirmed, status = await self._confirm(client, source, token_id=token_id, ring_version=ring_version)
        if not confirmed:
            return None
        return self.verdict(client, claims if token_id is not None and status in (None, "active") else None)

    async def _confirm(self, client: Client, source: str | None, *, token_id: UUID | None,
                       ring_version: int | None) -> tuple[bool, str | None]:
        """One query and one Redis read, together: the client's copy is current, nothing is counted against it or
        the address, and (``ring_version``) the key snapshot the token was checked against is the ring's; then
        the token's status (``revoked`` if the store listed its revocation)."""
        (version, status, ring), clean = await asyncio.gather(self._versions(client.id, token_id),
                                                              self.no_failures(client.client_id, source))
        current = version == client.version and (ring_version is None or ring == ring_version)
        return current and clean, status

    def verdict(self, client: Client, claims: dict[str, Any] | None) -> dict[str, Any] | None:
        """The answer for a live token's claims (None: revoked or invalid), or None for the general path."""
        if claims is None:
            return dict(INACTIVE)
        if "project_id" not in claims:
            return None  # a dashboard token: visible to the project's current members' clients (general path)
        if claims["project_id"] != str(client.project_id):
            return dict(INACTIVE)
        return self.describe(claims)

    def describe(self, claims: dict[str, Any]) -> dict[str, Any]:
        """RFC 7662 section 2.2 from a verified access token's claims (what the general path reads from its stream)."""
        return {"active": True, "scope": claims.get("scope", ""), "client_id": claims["client_id"],
                "sub": claims["sub"], "exp": claims["exp"], "iat": claims["iat"], "iss": claims["iss"],
                "aud": claims["aud"], "token_type": "Bearer", "project_id": claims["project_id"],
                "jti": claims["jti"]}

    async def _versions(self, client_key: UUID, token_id: UUID | None) -> tuple[int | None, str | None, int]:
        row = await self._gate.read(token_id, client_key)
        return row.stream_version, "revoked" if row.written_through else row.status, row.ring_version

    async def no_failures(self, client_id: str, source: str | None) -> bool:
        """Whether neither the client (from ``source``) nor the address has failures counted, read at most once per
        CLEAN_FOR.

        Failures are always counted at once (wrong secrets never take this path); only noticing that a known
        client became locked may take up to CLEAN_FOR seconds here.
        """
        now = time.monotonic()
        if self._clean_until.get((client_id, source), 0.0) > now:
            return True
        limiter = self._container.tokens.limiter
        keys = client_keys(client_id, source)
        try:
            values = await self._redis.mget([limiter.redis_key(key) for key in keys])
        except redis.RedisError:
            return False  # the general path fails closed with its own answer
        clean = all(value is None or int(value) == 0 for value in values)
        if clean:
            if len(self._clean_until) >= CACHE_LIMIT:
                self._clean_until.clear()
            self._clean_until[(client_id, source)] = now + CLEAN_FOR
        return clean

    def remember(self, client: Client, secret: str) -> None:
        """After the general path authenticated ``client`` with ``secret``: keep a private copy for this path (a
        load and a deep copy, so only when this process has none as recent yet)."""
        secret_hash = self.secret_hash(secret)
        held = self.known.get(client.client_id, secret_hash)
        if held is not None and held.version >= client.version:
            return
        copy = self._container.app.find(client_aggregate_id(client.client_id), Client)
        if copy is not None and copy.secret_matches(secret_hash, self._container.tokens.clock.now()):
            self.known.remember(copy, secret_hash)


def token_id_of(claims: dict[str, Any] | None) -> UUID | None:
    """The token id a JWT's claims name (its ``jti``), or None."""
    if claims is None:
        return None
    try:
        return UUID(str(claims["jti"]))
    except (KeyError, ValueError):
        return None

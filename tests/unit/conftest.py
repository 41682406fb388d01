"""Unit-test fixtures: the application on eventsourcing's in-memory store, real crypto adapters, a fixed clock.

Nothing here does I/O: no PostgreSQL, no Redis, no network.
"""

import base64
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from application.accounts import Accounts, SignedUp, SignUp
from application.authz import Principal
from application.keys import SigningKeys
from application.oauth.errors import TemporarilyUnavailable
from application.oauth.grants import TokenEndpoint
from application.oauth.limits import AttemptBudget, AttemptKey, AttemptLimits
from application.oauth.revocation import Revoker
from application.oauth.tokens import TokenMint
from application.ports import FamilySelection
from application.store import Keyledger
from domain.keyring import KeyRing
from domain.scopes import ALL_SCOPES
from domain.token import Token
from infrastructure.adapters import OpaqueCredentials
from infrastructure.bootstrap import direct_saver
from infrastructure.crypto.hashing import Argon2PasswordHasher, HmacSecretHasher, derive_key
from infrastructure.crypto.jwt import JwtSigner, JwtValidator, KeySet, KeySnapshot, published_key
from infrastructure.crypto.keys import SigningKeyFactory
from infrastructure.settings import Settings

SERVER_KEY = b"unit-test-server-key-" + b"x" * 32
# Fixed for the session, a minute in the past: tokens minted "at T0" validate against the real time PyJWT uses.
T0 = datetime.now(tz=UTC).replace(microsecond=0) - timedelta(minutes=1)
PASSWORD = "correct horse battery staple"


def person(user_id: UUID, scopes: frozenset[str] = ALL_SCOPES) -> Principal:
    """A person calling with a dashboard token of ``scopes``."""
    return Principal(client_id="dashboard", user_id=user_id, project_id=None, scopes=scopes, token_id=uuid4())


class FixedClock:
    """A clock that only moves when told to."""

    def __init__(self, now: datetime = T0) -> None:
        self.current = now

    def now(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> None:
        self.current += timedelta(**delta)


class MemoryLimiter:
    """The attempt limiter's semantics (see infrastructure/ratelimit.py) in a dict, on the fixed clock.

    ``calls`` records each port call's name, so tests can count round trips; ``down`` makes the store unavailable.
    """

    def __init__(self, clock: FixedClock, limits: AttemptLimits) -> None:
        self.clock = clock
        self.limits = limits
        self.counters: dict[AttemptKey, tuple[int, datetime]] = {}
        self.calls: list[str] = []
        self.down = False

    def count(self, key: AttemptKey) -> int:
        return self._live(key)[0]

    def _live(self, key: AttemptKey) -> tuple[int, datetime]:
        count, expires = self.counters.get(key, (0, self.clock.now()))
        if expires <= self.clock.now():
            self.counters.pop(key, None)
            return 0, self.clock.now()
        return count, expires

    def _wait(self, key: AttemptKey) -> int:
        return math.ceil((self._live(key)[1] - self.clock.now()).total_seconds())

    def _add(self, key: AttemptKey, delta: int) -> None:
        before, expires = self._live(key)
        count, limit = before + delta, self.limits.limit(key)
        if before == 0:
            expires = self.clock.now() + timedelta(seconds=self.limits.window)
        if before < limit <= count:
            expires = self.clock.now() + timedelta(seconds=self.limits.lockout)
        self.counters[key] = (count, expires)

    def _check(self, name: str) -> None:
        self.calls.append(name)
        if self.down:
            raise TemporarilyUnavailable("authentication is temporarily unavailable; try again shortly")

    def reserve(self, keys: Sequence[AttemptKey]) -> int | None:
        self._check("reserve")
        waits = [self._wait(k) for k in keys if self.count(k) >= self.limits.limit(k)]
        if waits:
            return max(waits)
        for key in keys:
            self._add(key, 1)
        return None

    def release(self, keys: Sequence[AttemptKey], *, reset: Sequence[AttemptKey] = ()) -> None:
        self.calls.append("release")
        for key in keys:
            if key in reset:
                self.counters.pop(key, None)
            elif self.count(key) > 0:
                count, expires = self._live(key)
                self.counters[key] = (count - 1, expires)

    def budget(self, keys: Iterable[AttemptKey]) -> AttemptBudget:
        self._check("budget")
        budget = AttemptBudget(self.limits)
        for key in keys:
            if self.count(key):
                budget.counts[key] = self.count(key)
                if self.count(key) >= self.limits.limit(key):
                    budget.waits[key] = self._wait(key)
        return budget

    def settle(self, budget: AttemptBudget) -> None:
        self.calls.append("settle")
        for key in budget.resets:
            self.counters.pop(key, None)
        for key, n in budget.failures.items():
            if n > 0:
                self._add(key, n)


def in_memory_app() -> Keyledger:
    return Keyledger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})


def fast_passwords() -> Argon2PasswordHasher:
    return Argon2PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def snapshot_of(ring: KeyRing, factory: SigningKeyFactory) -> KeySnapshot:
    """The key snapshot a process would build from the ring (as the composition root does)."""
    assert ring.active_kid is not None
    published = {kid: published_key(kid, str(k["alg"]), dict(k["public_jwk"]))  # type: ignore[call-overload]
                 for kid, k in ring.published().items()}
    active = ring.keys[ring.active_kid]
    return KeySnapshot(published=published, active_kid=ring.active_kid,
                       active_private_key=factory.decrypt(ring.active_kid, str(active["encrypted_private_key"])))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The unverified header and claims of a compact JWS."""
    header, payload, _ = token.split(".")
    return (json.loads(base64.urlsafe_b64decode(header + "==")), json.loads(base64.urlsafe_b64decode(payload + "==")))


@dataclass
class World:
    """One keyledger process's application components, on the in-memory store."""

    app: Keyledger
    clock: FixedClock
    settings: Settings
    secrets: HmacSecretHasher
    passwords: Argon2PasswordHasher
    minter: OpaqueCredentials
    accounts: Accounts
    tokens: TokenEndpoint
    keys: KeySet
    validator: JwtValidator
    limiter: MemoryLimiter

    def sign_up(self, email: str, password: str = PASSWORD, project_name: str = "Acme") -> SignedUp:
        return self.accounts.sign_up(SignUp(email=email, password=password, project_name=project_name))

    def position(self) -> int:
        return self.app.recorder.max_notification_id() or 0


class StoreIndex:
    """The token index computed from the in-memory store's events on every call (always current)."""

    def __init__(self, app: Keyledger, clock: "FixedClock") -> None:
        self._app = app
        self._clock = clock

    def _tokens(self) -> list[Token]:
        ids = {n.originator_id for n in self._app.recorder.select_notifications(start=1, limit=10**9)}
        found = [self._app.find(i, Token) for i in ids]
        return [t for t in found if t is not None]

    def wait_for(self, position: int, timeout: float = 5.0) -> None:
        return None

    def is_revoked(self, token_id: Any) -> bool:
        token = self._app.find(token_id, Token)
        return token is not None and (token.revoked or token.used)

    def live_in_family(self, family_id: Any) -> list[Any]:
        return [t.id for t in self._tokens() if t.family_id == family_id and not t.revoked and not t.used]

    def families_as_of(self, token_ids: Sequence[Any]) -> dict[Any, FamilySelection]:
        held = [t for t in self._tokens() if t.id in set(token_ids) and t.family_id is not None  # it holds all
                and not (t.revoked or t.used or t.expired)]
        return {t.id: FamilySelection(family_id=t.family_id, parent_id=t.parent_id,
                                      live=self.live_in_family(t.family_id)) for t in held}

    def live_matching(self, *, project_id: Any, client_id: str | None = None, user_id: Any = None,
                      token_id: Any = None, now: datetime) -> list[Any]:
        return [t.id for t in self._tokens() if t.project_id == project_id and t.is_live(now)
                and (t.id == token_id or t.client_id == client_id or (user_id and t.user_id == user_id))]

    def live_of_user(self, user_id: Any, *, now: datetime) -> list[Any]:
        return [t.id for t in self._tokens() if t.user_id == user_id and t.is_live(now)]


def build_world(alg: str = "ES256", issuer: str = "https://auth.example.test",
                limits: AttemptLimits | None = None) -> World:
    app, clock = in_memory_app(), FixedClock()
    limiter = MemoryLimiter(clock, limits or AttemptLimits())
    settings = Settings(issuer=issuer, secret_key=SERVER_KEY.decode(), signing_alg=alg)
    secrets = HmacSecretHasher(derive_key(SERVER_KEY, "keyledger secret hash v1"))
    factory = SigningKeyFactory(derive_key(SERVER_KEY, "keyledger signing key encryption v1"))
    ring = SigningKeys(app=app, keys=factory, clock=clock, algorithm=alg).ensure_active_key()
    keys = KeySet(lambda: snapshot_of(app.load(ring.id, KeyRing), factory))
    passwords, minter = fast_passwords(), OpaqueCredentials()
    mint = TokenMint(signer=JwtSigner(keys), minter=minter, secrets=secrets, issuer=settings.issuer,
                     audience=settings.audience)

    save = direct_saver(app)
    revoker = Revoker(app=app, clock=clock, index=StoreIndex(app, clock), save=save)
    tokens = TokenEndpoint(app=app, clock=clock, passwords=passwords, secrets=secrets, minter=minter, mint=mint,
                           save=save, lifetimes=settings.lifetimes, revoker=revoker, limiter=limiter)
    accounts = Accounts(app=app, clock=clock, passwords=passwords, secrets=secrets, minter=minter,
                        lifetimes=settings.lifetimes, limiter=limiter)
    validator = JwtValidator(keys, settings.issuer, settings.audience, clock=lambda: clock.now().timestamp())
    return World(app=app, clock=clock, settings=settings, secrets=secrets, passwords=passwords, minter=minter,
                 accounts=accounts, tokens=tokens, keys=keys, validator=validator, limiter=limiter)


@pytest.fixture
def world() -> Iterator[World]:
    built = build_world()
    yield built
    built.app.close()

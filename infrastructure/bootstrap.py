"""The composition root: builds every component of one keyledger process from its settings.

Nothing here runs at import. ``build`` is called by the CLI or by the ASGI app's startup hook, in the process that
will use the result, so each process owns its connection pools.
"""

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from application.accounts import Accounts
from application.clients import Clients
from application.keys import SigningKeys
from application.members import Members
from application.oauth.grants import TokenEndpoint
from application.oauth.introspection import IntrospectionEndpoint
from application.oauth.revocation import RevocationEndpoint, Revoker, TokenFinder
from application.oauth.tokens import TokenMint
from application.store import Keyledger
from application.token_admin import TokenAdmin
from domain.ids import keyring_id
from domain.keyring import KeyRing
from infrastructure.adapters import OpaqueCredentials, SystemClock
from infrastructure.batching import GroupCommitter
from infrastructure.crypto.hashing import Argon2PasswordHasher, HmacSecretHasher, derive_key
from infrastructure.crypto.jwt import JwtSigner, JwtValidator, KeySet, KeySnapshot, published_key
from infrastructure.crypto.keys import SigningKeyFactory
from infrastructure.postgres import eventsourcing_env, migration_lock
from infrastructure.ratelimit import RedisAttemptLimiter, default_prefix
from infrastructure.settings import Settings, SettingsError
from projections.audit import AuditView
from projections.base import ProjectionRunner, ReadModel
from projections.clients import ClientsView
from projections.members import MembersView
from projections.token_lookup import TokenLookupView

logger = logging.getLogger(__name__)

READ_MODELS: tuple[type[ReadModel], ...] = (MembersView, TokenLookupView, ClientsView, AuditView)
MIN_SECRET_KEY_LENGTH = 32


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where this process's stores are."""

    database_url: str
    redis_url: str


@dataclass
class Container:
    """Everything one process needs, built once."""

    settings: Settings
    app: Keyledger
    accounts: Accounts
    tokens: TokenEndpoint
    revoker: Revoker
    revocation: RevocationEndpoint
    introspection: IntrospectionEndpoint
    token_admin: TokenAdmin
    clients: Clients
    members_admin: Members
    keys: KeySet
    validator: JwtValidator
    committer: GroupCommitter
    views: dict[str, ReadModel]
    redis: Any
    runners: list[ProjectionRunner] = field(default_factory=list)

    @property
    def members(self) -> MembersView:
        """The members read model."""
        view = self.views[MembersView.name]
        assert isinstance(view, MembersView)
        return view

    @property
    def clients_view(self) -> ClientsView:
        """The clients read model."""
        view = self.views[ClientsView.name]
        assert isinstance(view, ClientsView)
        return view

    @property
    def lookup(self) -> TokenLookupView:
        """The token lookup read model."""
        view = self.views[TokenLookupView.name]
        assert isinstance(view, TokenLookupView)
        return view

    @property
    def audit(self) -> AuditView:
        """The audit ledger read model."""
        view = self.views[AuditView.name]
        assert isinstance(view, AuditView)
        return view

    def start_projections(self) -> None:
        """Runs every read model's projection in background threads of this process."""
        for view in self.views.values():
            runner = self.runner(view.name)
            runner.start()
            self.runners.append(runner)

    def runner(self, name: str) -> ProjectionRunner:
        """Returns a runner for the read model ``name`` (not started)."""
        return ProjectionRunner(recorder=self.app.recorder, mapper=self.app.mapper, model=self.views[name])

    def close(self) -> None:
        """Stops background work and closes pools."""
        for runner in self.runners:
            runner.stop()
        self.committer.close()
        self.app.close()
        self.redis.close()


def server_key(settings: Settings) -> bytes:
    """Returns the server key, refusing a missing or short one."""
    if not settings.secret_key or len(settings.secret_key) < MIN_SECRET_KEY_LENGTH:
        raise SettingsError(f"KEYLEDGER_SECRET_KEY must be set to at least {MIN_SECRET_KEY_LENGTH} characters")
    return settings.secret_key.encode()


def _key_snapshot(app: Keyledger, factory: SigningKeyFactory) -> KeySnapshot:
    ring = app.load(keyring_id(), KeyRing)
    assert ring.active_kid is not None
    published = {kid: published_key(kid, str(k["alg"]), dict(k["public_jwk"]))  # type: ignore[call-overload]
                 for kid, k in ring.published().items()}
    active = ring.keys[ring.active_kid]
    return KeySnapshot(published=published, active_kid=ring.active_kid,
                       active_private_key=factory.decrypt(ring.active_kid, str(active["encrypted_private_key"])))


def _position(app: Keyledger) -> Callable[..., int]:
    """A Saver that saves directly (one transaction per call) and returns the last position."""

    def save(*aggregates: Any) -> int:
        return max((r.notification.id for r in app.save(*aggregates)), default=0)

    return save


def build_view(view_class: type[ReadModel], app: Keyledger, *, migrate: bool) -> ReadModel:
    """Builds a read model on the application's connection pool (one pool per process keeps PostgreSQL's
    connection count at ``pool_size`` per process, however many read models there are)."""
    view = view_class(datastore=app.recorder.datastore, tracking_table_name=f"{view_class.name}_tracking")
    if migrate:
        view.create_table()
    return view


def build(settings: Settings, endpoints: Endpoints, *, migrate: bool = False) -> Container:
    """Builds a process's components. ``migrate`` creates tables and the first signing key (under a lock)."""
    key = server_key(settings)
    env = eventsourcing_env(endpoints.database_url, pool_size=settings.pool_size, create_table=migrate)
    lock = migration_lock(endpoints.database_url) if migrate else contextlib.nullcontext()
    clock = SystemClock()
    key_factory = SigningKeyFactory(derive_key(key, "keyledger signing key encryption v1"))
    opened: list[Any] = []
    try:
        with lock:
            app = Keyledger(env=env)
            opened.append(app)
            views = {cls.name: build_view(cls, app, migrate=migrate) for cls in READ_MODELS}
            SigningKeys(app=app, keys=key_factory, clock=clock, algorithm=settings.signing_alg).ensure_active_key()
        keys = KeySet(lambda: _key_snapshot(app, key_factory))
        # Short timeouts and one retry: a login waiting on an unreachable Redis answers 503 within seconds.
        client = redis.Redis.from_url(endpoints.redis_url, socket_connect_timeout=2, socket_timeout=2,
                                      retry=Retry(NoBackoff(), 1))
        opened.append(client)
        client.ping()
    except BaseException:
        for resource in reversed(opened):
            with contextlib.suppress(Exception):
                resource.close()
        raise
    return _assemble(settings, app=app, keys=keys, views=views, redis_client=client, secret_key=key,
                     limit_prefix=settings.rate_limit_prefix or default_prefix(endpoints.database_url))


def _assemble(settings: Settings, *, app: Keyledger, keys: KeySet, views: dict[str, ReadModel], redis_client: Any,
              secret_key: bytes, limit_prefix: str) -> Container:
    clock, minter = SystemClock(), OpaqueCredentials()
    hasher = HmacSecretHasher(derive_key(secret_key, "keyledger secret hash v1"))
    passwords = Argon2PasswordHasher()
    mint = TokenMint(signer=JwtSigner(keys), minter=minter, secrets=hasher, issuer=settings.issuer,
                     audience=settings.audience)
    lookup = views[TokenLookupView.name]
    assert isinstance(lookup, TokenLookupView)
    validator = JwtValidator(keys, settings.issuer, settings.audience)
    committer = GroupCommitter(app.save)
    revoker = Revoker(app=app, clock=clock, index=lookup, save=committer)
    finder = TokenFinder(app=app, minter=minter, secrets=hasher, access_tokens=validator)
    tokens = TokenEndpoint(app=app, clock=clock, passwords=passwords, secrets=hasher, minter=minter, mint=mint,
                           save=_position(app), lifetimes=settings.lifetimes, revoker=revoker,
                           limiter=RedisAttemptLimiter(redis_client, settings.attempt_limits, prefix=limit_prefix,
                                                       key=derive_key(secret_key, "keyledger attempt limit keys v1")))
    committer.bind(tokens.decide_batch)
    accounts = Accounts(app=app, clock=clock, passwords=passwords, secrets=hasher, minter=minter,
                        lifetimes=settings.lifetimes)
    return Container(settings=settings, app=app, accounts=accounts, tokens=tokens, revoker=revoker,
                     revocation=RevocationEndpoint(finder=finder, revoker=revoker),
                     introspection=IntrospectionEndpoint(finder=finder, clock=clock, issuer=settings.issuer,
                                                         audience=settings.audience),
                     token_admin=TokenAdmin(app=app, revoker=revoker, index=lookup),
                     members_admin=Members(app=app),
                     clients=Clients(app=app, accounts=accounts, clock=clock, secrets=hasher, minter=minter,
                                     lifetimes=settings.lifetimes),
                     keys=keys, validator=validator, committer=committer, views=views, redis=redis_client)

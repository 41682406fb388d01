"""The composition root: builds every component of one keyledger process from its settings.

Nothing here runs at import. ``build`` is called by the CLI or by the ASGI app's startup hook, in the process that
will use the result, so each process owns its connection pools.
"""

import contextlib
import functools
import logging
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from application.accounts import Accounts
from application.clients import Clients
from application.keys import SigningKeys
from application.members import Members
from application.oauth.client_revocation import ClientTokenRevocation, ClientTokenRevoker
from application.oauth.family_revocation import FamilyRevocation, FamilyRevoker
from application.oauth.grants import TokenEndpoint, TokenRequest
from application.oauth.introspection import IntrospectionEndpoint
from application.oauth.revocation import RevocationEndpoint, Revoker, TokenFinder
from application.oauth.tokens import TokenMint
from application.passwords import PasswordChanger
from application.store import Keyledger
from application.token_admin import TokenAdmin
from application.webhooks import Webhooks
from domain.entity import Stamping, stamp_with
from domain.ids import keyring_id
from domain.keyring import KeyRing
from infrastructure.adapters import OpaqueCredentials
from infrastructure.batching import GroupCommitter, RequestRouter
from infrastructure.clock import DatabaseClock
from infrastructure.crypto.hashing import Argon2PasswordHasher, HmacSecretHasher, derive_key
from infrastructure.crypto.jwt import JwtSigner, JwtValidator, KeySet, KeySnapshot, published_key
from infrastructure.crypto.keys import SigningKeyFactory
from infrastructure.crypto.webhook_secrets import WebhookSecrets
from infrastructure.postgres import eventsourcing_env, hand_out_recent_first, migration_lock
from infrastructure.ratelimit import RedisAttemptLimiter, default_prefix
from infrastructure.rotation_answers import RedisRotationAnswers
from infrastructure.settings import Settings, SettingsError
from infrastructure.webhook_setup import url_checker
from projections.audit import AuditView
from projections.base import HeadWatcher, ProjectionRunner, ReadModel, SharedDecoder
from projections.clients import ClientsView
from projections.family_reads import FamilyReads
from projections.members import MembersView
from projections.secret_expiry import SecretExpiryView
from projections.token_lookup import TokenLookupView
from projections.webhooks import WebhooksView

logger = logging.getLogger(__name__)

READ_MODELS: tuple[type[ReadModel], ...] = (MembersView, TokenLookupView, ClientsView, WebhooksView,
                                             SecretExpiryView, AuditView)
# The read models that apply every token event. With several API processes (``keyledger serve --workers N``) they
# run in the supervisor process, not in the API processes: applying thousands of events a second in a thread of an
# API process holds that process's GIL in bursts, and every request it serves waits behind them. The others, idle
# under token traffic and waited on by requests after each management command, run in every API process.
TOKEN_RATE_MODELS = frozenset({TokenLookupView.name, AuditView.name})
REMOTE_IDLE_WRITE = 0.05  # seconds: how fresh the position of a model run by another process stays for waiters
# seconds before the next pass of such a model after a pass that applied events: short, so that under load each pass
# applies a small batch (benchmarks/HISTORY.md, session 30: at 50 ms a pass of a revocation run applied about 250
# events, a burst that took a core from the API processes and lengthened their batches' tail); idle, it passes
# every REMOTE_IDLE_WRITE
REMOTE_BUSY_INTERVAL = 0.01
# Set by the supervisor for its API processes: the read models (comma-separated) it runs itself.
PROJECTIONS_ELSEWHERE = "KEYLEDGER_PROJECTIONS_ELSEWHERE"
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
    passwords: PasswordChanger
    keys: KeySet
    validator: JwtValidator
    committer: GroupCommitter
    views: dict[str, ReadModel]
    redis: Any
    namespace: str  # this deployment's prefix in Redis (abuse limits, Dramatiq queues, scheduler slots)
    webhooks: Webhooks
    webhook_secrets: WebhookSecrets
    clock: DatabaseClock  # the database's clock, which every decision on time reads (``infrastructure.clock``)
    runners: list[ProjectionRunner] = field(default_factory=list)
    head_watcher: HeadWatcher | None = None
    broker: Any = None  # the Dramatiq broker this process declared its actors on, if it runs or enqueues jobs
    stamping: Stamping | None = None  # the clock's binding as the one that stamps this process's events

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
    def webhooks_view(self) -> WebhooksView:
        """The webhooks read model and notification outbox."""
        view = self.views[WebhooksView.name]
        assert isinstance(view, WebhooksView)
        return view

    @property
    def audit(self) -> AuditView:
        """The audit ledger read model."""
        view = self.views[AuditView.name]
        assert isinstance(view, AuditView)
        return view

    def start_projections(self, names: Collection[str] | None = None, *, remote_waiters: bool = False) -> None:
        """Runs the projections of the read models ``names`` (default: all) in background threads of this process,
        woken by one head poll (every 50 ms) or by a request waiting on them; each also passes once a second on
        its own, writing its position even when it had nothing to apply. ``remote_waiters``: requests of other
        processes wait on these models and only see the written position, so each passes and writes its position
        every ``REMOTE_IDLE_WRITE`` seconds on its own, with no head poll, and every ``REMOTE_BUSY_INTERVAL`` after
        a pass that applied events."""
        views = [view for view in self.views.values() if names is None or view.name in names]
        interval = REMOTE_IDLE_WRITE if remote_waiters else 1.0
        busy = REMOTE_BUSY_INTERVAL if remote_waiters else interval
        decoder = SharedDecoder(self.app.mapper)  # the runners read the same events: each is decoded once
        for view in views:
            runner = ProjectionRunner(recorder=self.app.recorder, mapper=decoder, model=view,
                                      interval=interval, idle_write_interval=interval, busy_interval=busy)
            runner.start()
            self.runners.append(runner)
        # Only runners that pass once a second need the head poll. Those of models other processes wait on pass
        # every REMOTE_IDLE_WRITE: a poll beside them woke them between their own passes, and under token traffic the
        # supervisor's two models passed about 60% more often for no fresher position (each pass a durable commit;
        # benchmarks/HISTORY.md, session 18). Their own 10 ms after a busy pass costs more passes too, about a quarter
        # more of the supervisor's CPU under `revoke`, for smaller bursts beside the API processes (session 30).
        if not remote_waiters:
            self.head_watcher = HeadWatcher(self.app.recorder, views, by_topic=True)
            self.head_watcher.start()

    def runner(self, name: str) -> ProjectionRunner:
        """Returns a runner for the read model ``name`` (not started)."""
        return ProjectionRunner(recorder=self.app.recorder, mapper=self.app.mapper, model=self.views[name])

    def close(self) -> None:
        """Stops background work and closes pools; the clock stops stamping events even if one of those fails."""
        try:
            self.clock.stop()
            if self.head_watcher is not None:
                self.head_watcher.stop()
            for runner in self.runners:
                runner.stop()
            self.committer.close()
            self.app.close()
            self.redis.close()
        finally:
            if self.stamping is not None:
                self.stamping.close()


def server_key(settings: Settings) -> bytes:
    """Returns the server key, refusing a missing or short one."""
    if not settings.secret_key or len(settings.secret_key) < MIN_SECRET_KEY_LENGTH:
        raise SettingsError(f"KEYLEDGER_SECRET_KEY must be set to at least {MIN_SECRET_KEY_LENGTH} characters")
    return settings.secret_key.encode()


def signing_key_factory(settings: Settings) -> SigningKeyFactory:
    """The factory that generates signing keys and encrypts them at rest with a key derived from the server key."""
    return SigningKeyFactory(derive_key(server_key(settings), "keyledger signing key encryption v1"))


def _key_snapshot(app: Keyledger, factory: SigningKeyFactory) -> KeySnapshot:
    ring = app.load(keyring_id(), KeyRing)
    assert ring.active_kid is not None
    published = {kid: published_key(kid, str(k["alg"]), dict(k["public_jwk"]))  # type: ignore[call-overload]
                 for kid, k in ring.published().items()}
    active = ring.keys[ring.active_kid]
    return KeySnapshot(published=published, active_kid=ring.active_kid,
                       active_private_key=factory.decrypt(ring.active_kid, str(active["encrypted_private_key"])),
                       version=ring.version)


def _ring_version(app: Keyledger) -> int:
    """The key ring's version: one indexed read, no event decoded (every validation compares it)."""
    select_versions = getattr(app.recorder, "select_versions", None)
    if select_versions is not None:
        return int(select_versions([keyring_id()]).get(keyring_id(), 0))
    last = app.recorder.select_events(keyring_id(), desc=True, limit=1)
    return last[0].originator_version if last else 0


@contextlib.contextmanager
def database_clock(app: Keyledger) -> Iterator[Callable[[], float]]:
    """A connection ready to read the database server's clock (``infrastructure.clock.Session``): checked out of the
    pool and its transaction begun (psycopg sends BEGIN as the transaction is entered) before the first read, so a
    read is one round trip and nothing else."""
    with app.recorder.datastore.transaction(commit=False) as curs:

        def read() -> float:
            curs.execute("SELECT extract(epoch FROM clock_timestamp())::float8 AS now")
            return float(curs.fetchone()["now"])

        yield read


def direct_saver(app: Keyledger) -> Callable[..., int]:
    """A Saver that saves directly (one transaction per call) and returns the last position."""

    def save(*aggregates: Any, guards: Sequence[tuple[Any, int]] = ()) -> int:
        kwargs = {"guards": list(guards)} if guards else {}
        return max((r.notification.id for r in app.save(*aggregates, **kwargs)), default=0)

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
    clock = DatabaseClock()
    key_factory = signing_key_factory(settings)
    opened: list[Any] = []
    try:
        with lock:
            app = Keyledger(env=env)
            opened.append(app)
            hand_out_recent_first(app.recorder.datastore.pool)
            views = {cls.name: build_view(cls, app, migrate=migrate) for cls in READ_MODELS}
            session = functools.partial(database_clock, app)  # bound now: a test may swap the module's name later
            clock.calibrate(session)  # before the first key's dates are taken from it
            stamping = stamp_with(clock.now)  # events too are stamped by the database's clock (``domain.entity``)
            opened.append(stamping)
            SigningKeys(app=app, keys=key_factory, clock=clock, algorithm=settings.signing_alg).ensure_active_key()
        keys = KeySet(lambda: _key_snapshot(app, key_factory), version=lambda: _ring_version(app))
        # Short timeouts and one retry: a login waiting on an unreachable Redis answers 503 within seconds.
        client = redis.Redis.from_url(endpoints.redis_url, socket_connect_timeout=2, socket_timeout=2,
                                      retry=Retry(NoBackoff(), 1))
        opened.append(client)
        client.ping()
        container = _assemble(settings, app=app, keys=keys, views=views, redis_client=client, secret_key=key,
                              namespace=settings.rate_limit_prefix or default_prefix(endpoints.database_url),
                              clock=clock)
    except BaseException:  # what was opened is closed, the clock's binding among them
        for resource in reversed(opened):
            with contextlib.suppress(Exception):
                resource.close()
        raise
    container.stamping = stamping
    clock.start(session)
    return container


def _assemble(settings: Settings, *, app: Keyledger, keys: KeySet, views: dict[str, ReadModel], redis_client: Any,
              secret_key: bytes, namespace: str, clock: DatabaseClock) -> Container:
    minter = OpaqueCredentials()
    hasher = HmacSecretHasher(derive_key(secret_key, "keyledger secret hash v1"))
    passwords = Argon2PasswordHasher()
    mint = TokenMint(signer=JwtSigner(keys), minter=minter, secrets=hasher, issuer=settings.issuer,
                     audience=settings.audience)
    lookup = views[TokenLookupView.name]
    assert isinstance(lookup, TokenLookupView)
    validator = JwtValidator(keys, settings.issuer, settings.audience, clock=clock.time)
    committer = GroupCommitter(app.save, before_redecision=keys.refresh)
    revoker = Revoker(app=app, clock=clock, index=lookup, save=committer)
    finder = TokenFinder(app=app, minter=minter, secrets=hasher, access_tokens=validator)
    limiter = RedisAttemptLimiter(redis_client, settings.attempt_limits, prefix=namespace,
                                  key=derive_key(secret_key, "keyledger attempt limit keys v1"))
    tokens = TokenEndpoint(app=app, clock=clock, passwords=passwords, secrets=hasher, minter=minter, mint=mint,
                           save=direct_saver(app), lifetimes=settings.lifetimes, revoker=revoker, limiter=limiter,
                           answers=RedisRotationAnswers(redis_client, prefix=namespace))
    logouts = FamilyRevoker(app=app, clock=clock, index=lookup,
                            reads=FamilyReads(lookup, app.recorder.events_table_name))
    committer.bind(RequestRouter({TokenRequest: tokens.decide_batch,
                                  ClientTokenRevocation: ClientTokenRevoker(app=app, clock=clock).decide_batch,
                                  FamilyRevocation: logouts.decide_batch}))
    webhook_secrets = WebhookSecrets(derive_key(secret_key, "keyledger webhook secret encryption v1"))
    accounts = Accounts(app=app, clock=clock, passwords=passwords, secrets=hasher, minter=minter,
                        lifetimes=settings.lifetimes, limiter=limiter)
    return Container(settings=settings, app=app, accounts=accounts, tokens=tokens, revoker=revoker,
                     revocation=RevocationEndpoint(finder=finder, revoker=revoker),
                     introspection=IntrospectionEndpoint(finder=finder, clock=clock, issuer=settings.issuer,
                                                         audience=settings.audience),
                     token_admin=TokenAdmin(app=app, revoker=revoker, index=lookup),
                     members_admin=Members(app=app, limiter=limiter),
                     passwords=PasswordChanger(app=app, passwords=passwords, limiter=limiter, revoker=revoker,
                                               index=lookup),
                     clients=Clients(app=app, accounts=accounts, clock=clock, secrets=hasher, minter=minter,
                                     lifetimes=settings.lifetimes),
                     keys=keys, validator=validator, committer=committer, views=views, redis=redis_client,
                     namespace=namespace, webhook_secrets=webhook_secrets, clock=clock,
                     webhooks=Webhooks(app=app, secrets=webhook_secrets,
                                       check_url=url_checker(settings.webhook_allow_private)))

"""A project's clients (API keys): create, rotate the secret with a grace period.

Deleting a client lives in ``application.token_admin`` because it is first of all a bulk revocation.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from application.accounts import Accounts, CreateClient, NewClient
from application.authz import Authorization, Principal, authorize
from application.ports import Clock, CredentialMinter, SecretHasher
from application.store import Keyledger
from domain.client import Client
from domain.errors import Conflict, Forbidden, InvalidArgument, NotFound
from domain.ids import client_aggregate_id
from domain.policy import MAX_ACCESS_TOKEN_TTL, MIN_ACCESS_TOKEN_TTL, LifetimePolicy
from domain.project import Project
from domain.scopes import DEFAULT_CLIENT_SCOPE, parse_scope, unknown_scopes

MAX_GRACE_PERIOD = 30 * 24 * 3600
# Decisions tried before a client command that keeps losing to concurrent changes of its project or client is
# answered 409.
ATTEMPTS = 3
# The permission creating a client or rotating its secret takes.
WRITE = "clients:write"

T = TypeVar("T")


class ClientChanged(Conflict):
    """The client's own stream moved between the command's decision and its save: never decided again on top."""


@dataclass(frozen=True, slots=True)
class AddClient:
    """Create a client in a project, with at most the scope its creator holds there."""

    project_id: UUID
    name: str
    actor: str
    creator_permissions: frozenset[str]
    scope: str | None = None
    access_token_ttl: int | None = None
    secret_ttl: int | None = None
    decided_on: int | None = None  # the project's version ``creator_permissions`` were read at (see ``Clients``)


@dataclass(frozen=True, slots=True)
class RotateSecret:
    """Replace a client's secret; the old one keeps working for ``grace_period`` seconds, never after.

    ``caller_permissions``: what the caller holds in the project. The new secret is the client's whole authority, so
    a caller may rotate only a client whose scope it holds itself, as for creating one.
    """

    project_id: UUID
    client_id: str
    actor: str
    caller_permissions: frozenset[str]
    grace_period: int = 0
    decided_on: int | None = None  # the project's version ``caller_permissions`` were read at (see ``Clients``)


@dataclass(frozen=True, slots=True)
class RotatedSecret:
    """The client after rotation and its new secret, shown once."""

    client: Client
    client_secret: str


@dataclass(frozen=True, slots=True)
class Clients:
    """Handlers of the client commands; each decides on the client's own stream, and, given the project's version
    the caller's rights were read at (``decided_on``), saves only if the project is still there."""

    app: Keyledger
    accounts: Accounts
    clock: Clock
    secrets: SecretHasher
    minter: CredentialMinter
    lifetimes: LifetimePolicy

    def add(self, command: AddClient) -> NewClient:
        """Creates the client.

        Raises:
            InvalidArgument: an unknown scope, or a lifetime outside the server's bounds.
            Forbidden: the scope exceeds what the creator holds in the project (no escalation through a key).
        """
        scope = self.check_scope(command)
        self.check_lifetimes(command)
        new = self.accounts.new_client(CreateClient(project_id=command.project_id, name=command.name,
                                                    actor=command.actor, scope=scope,
                                                    access_token_ttl=command.access_token_ttl,
                                                    secret_ttl=command.secret_ttl))
        self._save(new.client, command.project_id, command.decided_on)
        return new

    def rotate(self, command: RotateSecret) -> RotatedSecret:
        """Rotates the secret.

        Raises:
            NotFound: no such live client in this project.
            Forbidden: the client holds scope the caller does not (its new secret would hand the caller that scope).
            Conflict: the client changed meanwhile.
        """
        if not 0 <= command.grace_period <= MAX_GRACE_PERIOD:
            raise InvalidArgument(f"grace_period must be between 0 and {MAX_GRACE_PERIOD} seconds")
        client = self.live_client(command.project_id, command.client_id)
        check_scope_held(client, command.caller_permissions, "rotate the secret of")
        secret, now = self.minter.client_secret(), self.clock.now()
        client.rotate_secret(secret_hash=self.secrets.hash(secret), secret_hint=self.minter.hint(secret),
                             secret_expires_at=now + timedelta(seconds=self.lifetimes.secret_ttl(None)),
                             previous_secret_expires_at=now + timedelta(seconds=command.grace_period),
                             actor=command.actor)
        self._save(client, command.project_id, command.decided_on)
        return RotatedSecret(client=client, client_secret=secret)

    def on_fresh_rights(self, caller: Principal, project_id: UUID, command: Callable[[Authorization], T]) -> T:
        """Runs ``command`` (``add`` or ``rotate``) with the caller's rights read on the project's current version,
        and again on the fresh streams when its save lost to a concurrent change of the project or the client.

        The save is guarded by the project's version the rights were read at, so any change of the project (a
        colleague adding a member, a webhook configured) fails it, not only one of the caller's role. Deciding again
        turns that into what it means: the command goes through if the caller's rights still hold, and a role
        lowered meanwhile is refused as such (403) rather than as a conflict. A save that lost to a change of the
        client itself (another rotation at the same moment) is not decided again: on top of the other rotation it
        would cut the secret that one just handed out to the other caller's grace period (none by default), so
        it is a 409 and the caller asks again knowing of it.

        Raises:
            Conflict: the client changed meanwhile, or the project kept changing (``ATTEMPTS`` decisions).
            NotFound, Forbidden: as ``authorize``, on the project's version of the last decision.
        """
        for _ in range(ATTEMPTS - 1):
            granted = authorize(self.app, caller, project_id, WRITE)
            try:
                return command(granted)
            except ClientChanged:
                raise  # whatever else moved too: deciding again would act on top of the other caller's change
            except Conflict:
                if not self._project_moved(project_id, granted.version):
                    raise
        return command(authorize(self.app, caller, project_id, WRITE))

    def _project_moved(self, project_id: UUID, version: int) -> bool:
        """Whether the project's stream is past ``version`` (a lost save's guard), as opposed to the client's."""
        project = self.app.find(project_id, Project, copy=False)
        return project is None or project.version != version

    def _save(self, client: Client, project_id: UUID, decided_on: int | None) -> None:
        """Saves ``client`` only if the project is still at ``decided_on`` (when given): the caller's permissions
        were read there, and a role changed or a member removed meanwhile must not let the command through.

        Raises:
            ClientChanged: the client changed meanwhile (another rotation, say).
            Conflict: the project changed meanwhile (asking again decides on the new state).
        """
        guards = ((project_id, decided_on),) if decided_on is not None else ()
        loaded = client.version - len(client.pending_events)  # the client's version the command decided on
        try:
            self.app.save(client, guards=guards)
        except IntegrityError:
            stored = self.app.find(client.id, Client, copy=False)
            if stored is not None and stored.version != loaded:
                raise ClientChanged("the client changed meanwhile; try again") from None
            raise Conflict("the project changed meanwhile; try again") from None

    def live_client(self, project_id: UUID, client_id: str) -> Client:
        """The project's live client (see ``live_client``)."""
        return live_client(self.app, project_id, client_id)

    @staticmethod
    def check_scope(command: AddClient) -> tuple[str, ...]:
        """The requested scope (default: read-only), known and within the creator's permissions."""
        scope = parse_scope(command.scope) if command.scope is not None else DEFAULT_CLIENT_SCOPE
        if not scope:
            raise InvalidArgument("scope must name at least one scope")
        unknown = unknown_scopes(scope)
        if unknown:
            raise InvalidArgument(f"unknown scope: {' '.join(unknown)}")
        beyond = sorted(set(scope) - command.creator_permissions)
        if beyond:
            raise Forbidden(f"you cannot give a client scope you do not hold: {' '.join(beyond)}")
        return scope

    def check_lifetimes(self, command: AddClient) -> None:
        """Refuses lifetimes outside the bounds rather than silently clamping what the caller asked for."""
        ttl = command.access_token_ttl
        if ttl is not None and not MIN_ACCESS_TOKEN_TTL <= ttl <= MAX_ACCESS_TOKEN_TTL:
            raise InvalidArgument(f"access_token_ttl must be between {MIN_ACCESS_TOKEN_TTL} and "
                                  f"{MAX_ACCESS_TOKEN_TTL} seconds")
        secret_ttl = command.secret_ttl
        if secret_ttl is not None and not 1 <= secret_ttl <= self.lifetimes.max_client_secret_ttl:
            raise InvalidArgument(f"secret_ttl must be between 1 and {self.lifetimes.max_client_secret_ttl} seconds")


def check_scope_held(client: Client, permissions: frozenset[str], action: str) -> None:
    """Refuses a command on ``client`` by a caller who lacks some of its scope, as creating one does: a developer must
    not take over (rotation) or destroy (deletion) an owner's broader key.

    Raises:
        Forbidden: naming the scopes the caller lacks (never the client's secret or anything else of it).
    """
    beyond = sorted(set(client.scopes) - permissions)
    if beyond:
        raise Forbidden(f"you cannot {action} a client with scope you do not hold: {' '.join(beyond)}")


def live_client(app: Keyledger, project_id: UUID, client_id: str) -> Client:
    """A fresh copy of the project's client, if it exists and is not revoked.

    Raises:
        NotFound: no such client, a revoked one, or another project's (its existence does not leak).
    """
    client = app.find(client_aggregate_id(client_id), Client)
    if client is None or client.project_id != project_id or client.revoked:
        raise NotFound("client")
    return client

"""Commands of people and projects: signing up, creating projects, creating clients."""

from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID, uuid4

from eventsourcing.persistence import IntegrityError

from application.oauth.errors import TooManyAttempts
from application.oauth.limits import signup_keys
from application.ports import AttemptLimiter, Clock, CredentialMinter, PasswordHasher, SecretHasher
from application.store import Keyledger
from domain.client import Client
from domain.errors import Conflict
from domain.ids import user_actor
from domain.policy import LifetimePolicy
from domain.project import Project
from domain.scopes import DEFAULT_CLIENT_SCOPE
from domain.user import EmailIndex, User, check_email


@dataclass(frozen=True, slots=True)
class SignUp:
    """Command: register a person, with a first project they own and that project's first client."""

    email: str
    password: str
    project_name: str
    source: str | None = None  # the request's source address: sign-ups are limited per address (``signup_keys``)


@dataclass(frozen=True, slots=True)
class CreateClient:
    """Command: create a confidential client (an API key) in a project."""

    project_id: UUID
    name: str
    actor: str
    scope: tuple[str, ...] = DEFAULT_CLIENT_SCOPE
    access_token_ttl: int | None = None
    secret_ttl: int | None = None


@dataclass(frozen=True, slots=True)
class NewClient:
    """A created client and its secret, which is shown once and never stored."""

    client: Client
    client_secret: str


@dataclass(frozen=True, slots=True)
class SignedUp:
    """What signing up created."""

    user: User
    project: Project
    client: NewClient


@dataclass(frozen=True, slots=True)
class Accounts:
    """Handlers of the account and project commands."""

    app: Keyledger
    clock: Clock
    passwords: PasswordHasher
    secrets: SecretHasher
    minter: CredentialMinter
    lifetimes: LifetimePolicy
    limiter: AttemptLimiter  # sign-ups per source address (``AttemptLimits.per_signup``)

    def new_client(self, command: CreateClient) -> NewClient:
        """Builds a client aggregate with a fresh secret (not yet saved)."""
        secret = self.minter.client_secret()
        now = self.clock.now()
        client = Client(client_id=self.minter.client_id(), project_id=command.project_id, name=command.name,
                        scope=" ".join(sorted(command.scope)), secret_hash=self.secrets.hash(secret),
                        secret_hint=self.minter.hint(secret),
                        secret_expires_at=now + timedelta(seconds=self.lifetimes.secret_ttl(command.secret_ttl)),
                        access_token_ttl=command.access_token_ttl, actor=command.actor)
        return NewClient(client=client, client_secret=secret)

    def sign_up(self, command: SignUp) -> SignedUp:
        """Saves the user, the email reservation, the project and its client in one transaction.

        Every attempt from a known source address counts against its sign-up limit first, successful or not: each
        costs an argon2id hash, and its answer tells whether the e-mail is registered.

        Raises:
            TooManyAttempts: the source address reached its sign-up limit (429 with ``Retry-After``, as a locked login).
            InvalidArgument: an address that could pass for another one (``check_email``), before any hashing.
            Conflict: the email is already registered (the index aggregate's version 1 exists).
        """
        wait = self.limiter.reserve(signup_keys(command.source))
        if wait is not None:
            raise TooManyAttempts(wait, "too many sign-ups from this address; try again later")
        check_email(command.email.strip())
        user_id, project_id = uuid4(), uuid4()
        actor = user_actor(user_id)
        user = User(user_id=user_id, email=command.email, password_hash=self.passwords.hash(command.password),
                    actor=actor)
        index = EmailIndex(email=command.email, user_id=user_id, actor=actor)
        project = Project(project_id=project_id, name=command.project_name, owner_id=user_id, actor=actor)
        new = self.new_client(CreateClient(project_id=project_id, name="default", actor=actor))
        try:
            self.app.save(user, index, project, new.client)
        except IntegrityError:
            raise Conflict("an account with this email exists") from None
        return SignedUp(user=user, project=project, client=new)

    def create_project(self, *, name: str, owner_id: UUID) -> Project:
        """Creates a project owned by ``owner_id``."""
        project = Project(project_id=uuid4(), name=name, owner_id=owner_id, actor=user_actor(owner_id))
        self.app.save(project)
        return project

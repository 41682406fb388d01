"""User aggregate and the email index that keeps emails unique."""

from uuid import UUID

from eventsourcing.domain import event

from domain.entity import Entity
from domain.errors import InvariantViolated
from domain.ids import email_index_id, normalize_email


class User(Entity):
    """A person who signs up, logs into the dashboard and belongs to projects.

    Only an argon2id hash of the password is ever recorded.
    """

    @staticmethod
    def create_id(user_id: UUID) -> UUID:
        """The id is chosen by the command so the actor of the first event can name the user."""
        return user_id

    @event("UserRegistered")
    def __init__(self, *, user_id: UUID, email: str, password_hash: str, actor: str) -> None:
        self.email = normalize_email(email)
        self.password_hash = password_hash
        self.disabled = False

    @event("PasswordChanged")
    def change_password(self, *, password_hash: str, actor: str) -> None:
        """Records a new argon2id password hash."""
        self.password_hash = password_hash

    def disable(self, *, actor: str) -> None:
        """Disables the account: it can no longer log in or use its tokens."""
        self.check_not_disabled()
        self._disable(actor=actor)

    @event("UserDisabled")
    def _disable(self, *, actor: str) -> None:
        self.disabled = True

    def check_not_disabled(self) -> None:
        """Raises if the account is disabled."""
        if self.disabled:
            raise InvariantViolated("the user is disabled")


class EmailIndex(Entity):
    """Reserves one email for one user: its id is uuid5 of the email, so a second reservation cannot be saved."""

    @staticmethod
    def create_id(email: str) -> UUID:
        """Derives the index id from the email."""
        return email_index_id(email)

    @event("EmailReserved")
    def __init__(self, *, email: str, user_id: UUID, actor: str) -> None:
        self.user_id = user_id

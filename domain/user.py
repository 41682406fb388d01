"""User aggregate and the email index that keeps emails unique."""

import unicodedata
from datetime import datetime
from uuid import UUID

from eventsourcing.domain import event

from domain.entity import Entity
from domain.errors import InvalidArgument, InvariantViolated
from domain.ids import email_index_id, normalize_email

# Unicode categories no e-mail address needs: controls, format characters (zero-width joiners and spaces, direction
# marks), private use, surrogates, unassigned code points, and separators.
_INVISIBLE = frozenset({"Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp", "Zs"})
# Unicode's Default_Ignorable_Code_Point ranges (DerivedCoreProperties.txt): drawn as nothing, whatever their
# category (a combining grapheme joiner, variation selectors, Hangul fillers, Khmer invisible vowels...).
_IGNORABLE = ((0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5),
              (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164),
              (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3),
              (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF))


def _invisible(character: str) -> bool:
    code = ord(character)
    return unicodedata.category(character) in _INVISIBLE or any(low <= code <= high for low, high in _IGNORABLE)


def check_email(email: str) -> None:
    """Refuses an address that would look like another one: members are added by e-mail, and ``kate@corp.com`` with
    a zero-width space in it, or with a fullwidth letter or a decomposed accent, is a different account that looks
    the same in the members list. The address must be stable under Unicode NFKC (which composes accents and folds
    fullwidth and other compatibility forms) and hold no invisible character (by category, or ignorable by default).
    Letters of another script that look alike (a Cyrillic ``a``, U+0430, for a Latin one) are not caught: only verifying
    the address would be. The price: a zero-width non-joiner, which some Persian and Indic spellings use, and
    compatibility characters such as ``µ`` (NFKC makes it ``μ``) are refused too.

    Raises:
        InvalidArgument: saying why, without echoing the address.
    """
    if unicodedata.normalize("NFKC", email) != email:
        raise InvalidArgument("email must be in Unicode normalization form NFKC (no compatibility or decomposed "
                              "characters)")
    if any(_invisible(character) for character in email):
        raise InvalidArgument("email must not contain control, format, unassigned or space characters")


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
        self.password_changed_at: datetime | None = None
        self.password_changed_version: int | None = None

    @event("PasswordChanged")
    def change_password(self, *, password_hash: str, changed_at: datetime, actor: str) -> None:
        """Records a new argon2id password hash; the sessions begun before it are refused from then on
        (``predates_password_change``)."""
        self.password_hash = password_hash
        self.password_changed_at = changed_at
        self.password_changed_version = self.version + 1  # this event's (eventsourcing sets it once this returns)

    def predates_password_change(self, *, issued_at: datetime, account_version: int | None) -> bool:
        """Whether a token belongs to a session that began before the last password change: its refresh is refused,
        whether or not the change's revocations have reached it yet.

        ``account_version``: the version of this account's stream the token's grant was decided on (recorded on
        refresh tokens). A login decided on the old password can commit after ``changed_at`` was taken and before
        the change did: only the version tells it from a login with the new one. Tokens recorded before the version
        was (None) are judged by their issuance time.
        """
        if self.password_changed_version is None:
            return False
        if account_version is not None:
            return account_version < self.password_changed_version
        return self.password_changed_at is not None and issued_at < self.password_changed_at

    def ended_session(self, *, issued_at: datetime, account_version: int | None) -> bool:
        """Whether a refresh token issued to this person can no longer be redeemed: the account is disabled, or the
        session began before the last password change (``predates_password_change``). The token endpoint refuses it
        and introspection calls it inactive, whether or not the revocations that follow have reached it yet."""
        return self.disabled or self.predates_password_change(issued_at=issued_at, account_version=account_version)

    def disable(self, *, actor: str) -> None:
        """Disables the account: it can no longer log in or use its tokens."""
        self.check_not_disabled()
        self._disable(actor=actor)

    @event("UserDisabled")
    def _disable(self, *, actor: str) -> None:
        self.disabled = True

    def enable(self, *, actor: str) -> None:
        """Lets a disabled account log in again. Its tokens stay revoked: the person logs in afresh."""
        if not self.disabled:
            raise InvariantViolated("the user is not disabled")
        self._enable(actor=actor)

    @event("UserEnabled")
    def _enable(self, *, actor: str) -> None:
        self.disabled = False

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

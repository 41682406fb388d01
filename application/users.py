"""The platform operator's commands on accounts: disabling a person's account ends every token of theirs; enabling
it again lets the person log in afresh (the revoked tokens stay revoked).

An account that is compromised, or whose owner left, must stop working when the operator says so: no new login (the
password grant refuses a disabled user), no refresh (refused too), and no token still live once the command returns.
The account's ``UserDisabled`` is committed first, on its own, so that nothing racing the revocations can starve it;
from then on no login or refresh of the account is decided. Then its live tokens are revoked in passes, each after
the token lookup model has applied the store's head, until one finds none (every ``TokenRevoked`` is listed for every
process in the transaction that records it, DESIGN.md invariant 1).

What was decided before the commit and saved after it is refused by its guard: a password login and a refresh save
their tokens only if the user's stream is still at the version their decision read (``TokenEndpoint.password_grant``,
``refresh_grant``), so they conflict, are decided again and refused. Everything issued before the commit is in the
store when the passes wait for its head; the passes repeat until one finds none (a refresh committed between a
pass's selection and its save makes that save conflict, and the retry follows the rotation).

Running the command again for a disabled account runs the passes again (a run cut short finishes there).
"""

from dataclasses import dataclass
from uuid import UUID, uuid4

from eventsourcing.persistence import IntegrityError

from application.oauth.revocation import Revoker
from application.ports import TokenIndex
from application.store import Keyledger
from application.token_admin import BULK_WAIT
from domain.errors import Conflict, NotFound
from domain.ids import SYSTEM_ACTOR, email_index_id
from domain.user import EmailIndex, User

USER_DISABLED = "user disabled"  # the reason of the revocations a disabled account's tokens record


@dataclass(frozen=True, slots=True)
class DisableUser:
    """Disable the account registered with ``email`` and revoke every live token of it."""

    email: str
    actor: str = SYSTEM_ACTOR


@dataclass(frozen=True, slots=True)
class EnableUser:
    """Let the account registered with ``email`` log in again (a disabling undone, its tokens left revoked)."""

    email: str
    actor: str = SYSTEM_ACTOR


@dataclass(frozen=True, slots=True)
class Disabled:
    """What ``disable_user`` did: whether this call disabled the account (False: it already was), and how many
    tokens it revoked."""

    newly: bool
    revoked: int


@dataclass(frozen=True, slots=True)
class UserAdmin:
    """Handles the operator's commands on accounts."""

    app: Keyledger
    revoker: Revoker
    index: TokenIndex

    def disable_user(self, command: DisableUser) -> Disabled:
        """Disables the account, then revokes its live tokens until none is left (see the module).

        Raises:
            NotFound: no account is registered with that email.
            TimeoutError: tokens of the account kept appearing or changing (the passes are bounded).
        """
        user_id = self._user_id(command.email)
        user = self.app.load(user_id, User)
        newly = not user.disabled
        if newly:
            user.disable(actor=command.actor)
            self.app.save(user)  # a conflict (another operator, at once) is raised: run the command again

        def select() -> list[UUID]:
            return self.index.live_of_user(user_id, now=self.revoker.clock.now())

        revoked = self.revoker.revoke_until_none(select, reason=USER_DISABLED, actor=command.actor,
                                                 revocation_id=uuid4(), wait=BULK_WAIT, follow_children=True)
        return Disabled(newly=newly, revoked=revoked)

    def enable_user(self, command: EnableUser) -> bool:
        """Enables the account; False if it was not disabled (nothing recorded).

        Raises:
            NotFound: no account is registered with that email.
            Conflict: the account changed meanwhile (run the command again).
        """
        user = self.app.load(self._user_id(command.email), User)
        if not user.disabled:
            return False
        user.enable(actor=command.actor)
        try:
            self.app.save(user)
        except IntegrityError:
            raise Conflict("the account changed meanwhile; run the command again") from None
        return True

    def _user_id(self, email: str) -> UUID:
        index = self.app.find(email_index_id(email), EmailIndex, copy=False)
        if index is None:
            raise NotFound("user")
        return UUID(str(index.user_id))

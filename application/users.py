"""The platform operator's command on accounts: disabling a person's account ends every token of theirs at once.

An account that is compromised, or whose owner left, must stop working the moment the operator says so: no new login
(the password grant refuses a disabled user), no refresh (refused too), and no token still live. The ``UserDisabled``
and the ``TokenRevoked`` of each of the person's live tokens (their dashboard logins, platform-wide, and any token of
a project that names them) are saved in one transaction, so there is no moment at which the account is disabled and
one of its tokens still works, and every process refuses them all once the command returns (DESIGN.md invariant 1).

Requests racing the command cannot leave a token behind: a login decided before the account was disabled saves its
tokens guarded by the user's stream version (``TokenEndpoint.password_grant``), so it conflicts and is decided
again, and refused; a refresh decided before conflicts on its refresh token's stream, which this command revokes;
one committed before it is followed to the pair it issued (``Revoker`` loads the used token's children).
"""

from dataclasses import dataclass
from uuid import UUID

from application.oauth.revocation import Revoker
from application.ports import TokenIndex
from application.store import Keyledger
from domain.errors import NotFound
from domain.ids import SYSTEM_ACTOR, email_index_id
from domain.user import EmailIndex, User

USER_DISABLED = "user disabled"  # the reason of the revocations a disabled account's tokens record
WAIT = 60.0  # seconds the selection waits at most for the token lookup model (as a bulk command does)


@dataclass(frozen=True, slots=True)
class DisableUser:
    """Disable the account registered with ``email`` and revoke every live token of it."""

    email: str
    actor: str = SYSTEM_ACTOR


@dataclass(frozen=True, slots=True)
class UserAdmin:
    """Handles the operator's commands on accounts."""

    app: Keyledger
    revoker: Revoker
    index: TokenIndex

    def disable_user(self, command: DisableUser) -> int:
        """Disables the account and revokes its live tokens in one transaction; returns how many tokens.

        Raises:
            NotFound: no account is registered with that email.
            InvariantViolated: the account is already disabled (its tokens were revoked then).
        """
        user_id = self._user_id(command.email)

        def disabled() -> list[User]:
            user = self.app.load(user_id, User)
            user.disable(actor=command.actor)
            return [user]

        def select() -> list[UUID]:
            return self.index.live_of_user(user_id, now=self.revoker.clock.now())

        return self.revoker.revoke_ids(select, reason=USER_DISABLED, actor=command.actor, extra=disabled,
                                       follow_children=True, wait=WAIT)

    def _user_id(self, email: str) -> UUID:
        index = self.app.find(email_index_id(email), EmailIndex, copy=False)
        if index is None:
            raise NotFound("user")
        return UUID(str(index.user_id))

"""A person changes their own password, and every session of theirs ends with it.

The current password is checked as a login checks it: counted against the account's and the address's attempt
limits before argon2id verifies it (``application.oauth.limits``), so this is no way around the password grant's
limits, and a success clears the account's counter as a login does; a wrong one is recorded for the audit
(``PasswordChangeRefused``, in a stream of its own), as a refused login is. The new hash is recorded in
``PasswordChanged`` on the user's stream, saved only if the stream is still at the version the check read (a change
or a disabling at the same moment conflicts: 409, ask again).

Then every live token of the person is revoked in passes, as ``application.users`` does for a disabled account, this
request's own session included: whoever learnt the old password may hold a session of their own, and the caller logs
in again with the new one. A login decided with the old password before the change and saved after it is refused by
its guard on the user's stream (``TokenEndpoint.login_tokens``) and decided again on the new hash. From the change on,
a refresh token of a session decided on the account's stream before the change is refused (each records the version
it was decided on; ``User.predates_password_change``, checked by the refresh grant, whose save is guarded on the
user's stream too), so no session older than the change can be extended, even before the passes reach its tokens:
not even a login decided on the old password that was saved after ``changed_at`` was taken and before the change.

If the passes cannot finish (the token lookup model lagging past its wait: the caller gets a 503), the password is
changed and some access tokens may still be live until their expiry (their refresh is refused already). The same
request again finishes them: its current password no longer
verifies, but its new one does, which proves as much as a login with it (and is counted as one), so the passes run
again without another change.
"""

import hmac
from dataclasses import dataclass
from uuid import UUID, uuid4

from eventsourcing.persistence import IntegrityError

from application.oauth.limits import account_keys, limited_attempt
from application.oauth.refusals import user_agent
from application.oauth.revocation import Revoker
from application.ports import AttemptLimiter, PasswordHasher, TokenIndex
from application.store import Keyledger
from application.token_admin import BULK_WAIT
from domain import refusal as why
from domain.errors import Conflict, InvalidArgument, NotFound
from domain.ids import user_actor
from domain.refusal import PasswordChangeRefusal
from domain.user import User

PASSWORD_CHANGED = "password changed"  # noqa: S105 - the reason of the revocations a password change records


@dataclass(frozen=True, slots=True)
class ChangePassword:
    """Replace the password of ``user_id``, who proves the current one; ``source``: the request's address."""

    user_id: UUID
    current_password: str
    new_password: str
    source: str | None = None
    user_agent: str | None = None  # the request's, recorded with a refusal (``PasswordChangeRefused``)


@dataclass(frozen=True, slots=True)
class PasswordChanger:
    """Handles ``ChangePassword`` (see the module)."""

    app: Keyledger
    passwords: PasswordHasher
    limiter: AttemptLimiter
    revoker: Revoker
    index: TokenIndex

    def change(self, command: ChangePassword) -> int:
        """Records the new password, then revokes every live token of the person; returns how many.

        Raises:
            NotFound: no such account, or a disabled one.
            InvalidArgument: the new password is the current one, or the current one is wrong (counted).
            TooManyAttempts: the account or the address is locked by failed attempts (429, ``Retry-After``).
            Conflict: the account changed meanwhile.
        """
        user = self.app.find(command.user_id, User)
        if user is None or user.disabled:
            raise NotFound("user")
        if hmac.compare_digest(command.current_password.encode(), command.new_password.encode()):
            raise InvalidArgument("new_password must differ from current_password")
        if not self._changed_already(user, command):
            user.change_password(password_hash=self.passwords.hash(command.new_password),
                                 changed_at=self.revoker.clock.now(), actor=user_actor(user.id))
            try:
                self.app.save(user)
            except IntegrityError:
                raise Conflict("the account changed meanwhile; try again") from None

        def select() -> list[UUID]:
            return self.index.live_of_user(user.id, now=self.revoker.clock.now())

        return self.revoker.revoke_until_none(select, reason=PASSWORD_CHANGED, actor=user_actor(user.id),
                                              revocation_id=uuid4(), wait=BULK_WAIT, follow_children=True)

    def _changed_already(self, user: User, command: ChangePassword) -> bool:
        """Verifies the current password (False), or else the new one (True: a repeated request whose change was
        recorded, see the module), each an attempt counted before it runs, as a login is; a failure stays counted.
        Each candidate is its own attempt: one request must not test two passwords for the price of one guess.

        Raises:
            TooManyAttempts: the account or the address is locked (429 with ``Retry-After``).
            InvalidArgument: neither verifies.
        """

        def verifies(password: str, verdict: bool) -> bool | None:
            return verdict if self.passwords.verify(user.password_hash, password) else None

        keys = account_keys(user.email, command.source)
        already = limited_attempt(self.limiter, keys, keys[0], lambda: verifies(command.current_password, False))
        if already is None:
            already = limited_attempt(self.limiter, keys, keys[0], lambda: verifies(command.new_password, True))
        if already is None:
            # Recorded for the audit as a refused login is (each guess counted first, so the limits bound how many).
            self.app.save(PasswordChangeRefusal(refusal_id=uuid4(), user_id=user.id, reason=why.PASSWORD_WRONG,
                                                source=command.source, user_agent=user_agent(command.user_agent),
                                                actor=user_actor(user.id)))
            raise InvalidArgument("current_password is wrong")
        return already

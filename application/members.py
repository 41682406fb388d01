"""A project's members and their roles: add, change, remove.

Members live inside the Project aggregate, so each command loads the project's stream, decides on that one
version (the caller's own rights included) and saves it with optimistic concurrency. Deciding the caller's rights
on the same version the change is saved on is what makes "only owners manage owners" and "a project keeps an owner"
hold under concurrent requests: if anything changed the members meanwhile (the caller's own role among them), the
save fails and the command is decided again on the fresh stream, or answered 409 if it keeps losing. A change takes
effect for tokens already issued because every request decides its rights on the stream, not on a token claim.
"""

from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from application.authz import Principal, access
from application.oauth.limits import limited_attempt, lookup_keys
from application.ports import AttemptLimiter
from application.store import Keyledger
from domain.errors import Conflict, Forbidden, NotFound
from domain.ids import email_index_id
from domain.project import Project
from domain.scopes import MANAGE_OWNERS, Role, needed_to_change_member
from domain.user import EmailIndex, User

# Saves tried before a command that keeps losing to concurrent changes of the same project is answered 409.
ATTEMPTS = 3
# What leaving a project takes: not a role's permission (every member may leave) but the token's consent.
LEAVE_SCOPE = "members:write"


class UnknownUser(NotFound):
    """No registered (and enabled) user has the email a command names."""


@dataclass(frozen=True, slots=True)
class AddMember:
    """Add the registered user with ``email`` to a project with ``role``.

    People are named by email because that is what a colleague knows of them; the email index (not a read model)
    resolves it, so a user who registered a moment ago can be added at once.
    """

    project_id: UUID
    email: str
    role: Role
    caller: Principal


@dataclass(frozen=True, slots=True)
class ChangeMemberRole:
    """Give a member of a project another role."""

    project_id: UUID
    user_id: UUID
    role: Role
    caller: Principal


@dataclass(frozen=True, slots=True)
class RemoveMember:
    """Remove a member from a project, or, when the caller names themself, leave it."""

    project_id: UUID
    user_id: UUID
    caller: Principal


@dataclass(frozen=True, slots=True)
class MemberChanged:
    """What a membership command did.

    Attributes:
        user_id: the member the command concerned.
        role: their role now; None once removed.
        position: the store position of the command's last event (0 when it recorded none), so a reply can wait for
            the members read model to show the change (read-your-writes).
    """

    user_id: UUID
    role: Role | None
    position: int


@dataclass(frozen=True, slots=True)
class Members:
    """Handlers of the membership commands.

    ``limiter``: counts the e-mails a caller names that no user registered (``AttemptLimits.per_lookup``); None, no
    limit (tests of other rules).
    """

    app: Keyledger
    limiter: AttemptLimiter | None = None

    def add(self, command: AddMember) -> MemberChanged:
        """Adds the member.

        The caller's rights are checked before the email is looked up, so only a ``members:write`` holder (with
        ``owners:manage`` to add an owner) learns whether an email is registered; and as anyone can sign up and own a
        project, the e-mails it names that no user registered are limited per caller (``looked_up``).

        Raises:
            NotFound: the caller may not see the project.
            Forbidden: the caller lacks ``members:write``, or ``owners:manage`` to add an owner.
            UnknownUser: no registered user has this email (counted).
            TooManyAttempts: the caller named too many unknown e-mails lately (429 with ``Retry-After``).
            InvariantViolated: the user is already a member (409).
            Conflict: concurrent changes kept winning.
        """

        def decide(project: Project) -> UUID:
            require(project, command.caller, needed_to_change_member(None, command.role))
            user_id = self.looked_up(command.email, command.caller.actor)
            project.add_member(user_id=user_id, role=command.role, actor=command.caller.actor)
            return user_id

        user_id, position = self._decide(command.project_id, decide)
        return MemberChanged(user_id=user_id, role=command.role, position=position)

    def change_role(self, command: ChangeMemberRole) -> MemberChanged:
        """Changes the member's role; giving the role they already have records nothing.

        Raises:
            NotFound: the caller may not see the project, or the user is not a member of it.
            Forbidden: the caller lacks ``members:write``, or ``owners:manage`` to promote to or demote from owner.
            InvariantViolated: the member is the project's last owner and would no longer be one (409).
            Conflict: concurrent changes kept winning.
        """

        def decide(project: Project) -> UUID:
            require(project, command.caller, frozenset({"members:write"}))
            current = project.role_of(command.user_id)
            if current is None:
                raise NotFound("member")
            require(project, command.caller, needed_to_change_member(current, command.role))
            if current != command.role:
                project.change_member_role(user_id=command.user_id, role=command.role, actor=command.caller.actor)
            return command.user_id

        _, position = self._decide(command.project_id, decide)
        return MemberChanged(user_id=command.user_id, role=command.role, position=position)

    def remove(self, command: RemoveMember) -> MemberChanged:
        """Removes the member.

        Any member may leave (remove themself) whatever their role, because holding someone in a project against
        their will protects nothing; the token must carry the ``members:write`` scope, the person's consent for
        this token to change memberships. Removing someone else needs ``members:write``, and ``owners:manage`` for
        an owner. The last owner can neither leave nor be removed: a project always keeps an owner.

        Raises:
            NotFound: the caller may not see the project, or the user is not a member of it.
            Forbidden: the caller lacks the permission (or, leaving, the scope) described above.
            InvariantViolated: the member is the project's last owner (409).
            Conflict: concurrent changes kept winning.
        """

        def decide(project: Project) -> UUID:
            caller = command.caller
            if caller.user_id == command.user_id:
                access(project, caller)
                if LEAVE_SCOPE not in caller.scopes:
                    raise Forbidden(f"leaving a project needs a token with the {LEAVE_SCOPE!r} scope")
            else:
                require(project, caller, frozenset({"members:write"}))
                current = project.role_of(command.user_id)
                if current is None:
                    raise NotFound("member")
                require(project, caller, needed_to_change_member(current, None))
            project.remove_member(user_id=command.user_id, actor=caller.actor)
            return command.user_id

        _, position = self._decide(command.project_id, decide)
        return MemberChanged(user_id=command.user_id, role=None, position=position)

    def looked_up(self, email: str, actor: str) -> UUID:
        """``registered_user``, counted against ``actor``'s lookup limit before the index is read (so concurrent
        lookups cannot all pass it), and uncounted when the e-mail is registered: only unknown e-mails add up, and a
        known one clears nothing (naming one's own e-mail between guesses buys no more of them)."""
        if self.limiter is None:
            return self.registered_user(email)

        def registered() -> UUID | None:
            try:
                return self.registered_user(email)
            except UnknownUser:
                return None  # stays counted

        user_id = limited_attempt(self.limiter, lookup_keys(actor), None, registered,
                                  refused="too many e-mails no user registered; try again later")
        if user_id is None:
            raise UnknownUser("no registered user with this email")
        return user_id

    def registered_user(self, email: str) -> UUID:
        """The id of the enabled user registered with ``email``, found through the email index's stream.

        A disabled account cannot be added: it could never use the membership.

        Raises:
            UnknownUser: no such user.
        """
        index = self.app.find(email_index_id(email), EmailIndex, copy=False)
        user = self.app.find(index.user_id, User, copy=False) if index is not None else None
        if user is None or user.disabled:
            raise UnknownUser("no registered user with this email")
        return user.id

    def _decide(self, project_id: UUID, decide: Callable[[Project], UUID]) -> tuple[UUID, int]:
        """Runs ``decide`` on the project's current version and saves what it raised, deciding again after a
        concurrent change (the store refuses a second event at the same version); returns what ``decide`` returned
        and the position of the saved events."""
        for _ in range(ATTEMPTS):
            project = self.app.find(project_id, Project)  # a copy: a refused save leaves the cache as it was
            if project is None:
                raise NotFound("project")
            result = decide(project)
            try:
                recordings = self.app.save(project)
            except IntegrityError:
                continue
            return result, max((r.notification.id for r in recordings), default=0)
        raise Conflict("the project's members changed meanwhile; try again")


def require(project: Project, caller: Principal, needed: frozenset[str]) -> None:
    """Checks that the caller holds every permission of ``needed`` in the project.

    Raises:
        NotFound: the caller may not see the project (before any 403, so existence does not leak).
        Forbidden: a permission is missing.
    """
    _, permissions = access(project, caller)
    missing = needed - permissions
    if MANAGE_OWNERS in missing and "members:write" in permissions:
        raise Forbidden(f"only owners manage owners: requires the {MANAGE_OWNERS!r} permission")
    if missing:
        raise Forbidden(f"requires the {' and '.join(repr(p) for p in sorted(missing))} permission")

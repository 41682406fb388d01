"""Project aggregate: the tenant, with its members inside."""

from uuid import UUID

from eventsourcing.domain import event

from domain.entity import Entity
from domain.errors import InvariantViolated, NotFound
from domain.scopes import Role
from domain.webhooks import MAX_WEBHOOKS, Webhook


class Project(Entity):
    """A tenant. Members (user + role) live inside it so role invariants are decided on one stream.

    Its events carry the project as their originator id.
    """

    @staticmethod
    def create_id(project_id: UUID) -> UUID:
        """The id is chosen by the command (a uuid4)."""
        return project_id

    @event("ProjectCreated")
    def __init__(self, *, project_id: UUID, name: str, owner_id: UUID, actor: str) -> None:
        self.project_id = project_id
        self.name = name
        self.members: dict[UUID, Role] = {owner_id: Role.OWNER}
        self.created_by = owner_id
        self.webhooks: dict[UUID, Webhook] = {}

    def role_of(self, user_id: UUID) -> Role | None:
        """Returns the member's current role, or None when the user is not a member."""
        return self.members.get(user_id)

    def add_member(self, *, user_id: UUID, role: Role, actor: str) -> None:
        """Adds a registered user to the project with a role."""
        if user_id in self.members:
            raise InvariantViolated("the user is already a member")
        self._add_member(user_id=user_id, role=Role(role), actor=actor)

    @event("MemberAdded")
    def _add_member(self, *, user_id: UUID, role: Role, actor: str) -> None:
        self.members[user_id] = Role(role)

    def change_member_role(self, *, user_id: UUID, role: Role, actor: str) -> None:
        """Changes a member's role, keeping at least one owner."""
        self.check_is_member(user_id)
        if self.members[user_id] == Role.OWNER and role != Role.OWNER:
            self.check_keeps_an_owner(user_id)
        self._change_member_role(user_id=user_id, role=Role(role), actor=actor)

    @event("MemberRoleChanged")
    def _change_member_role(self, *, user_id: UUID, role: Role, actor: str) -> None:
        self.members[user_id] = Role(role)

    def remove_member(self, *, user_id: UUID, actor: str) -> None:
        """Removes a member, keeping at least one owner."""
        self.check_is_member(user_id)
        if self.members[user_id] == Role.OWNER:
            self.check_keeps_an_owner(user_id)
        self._remove_member(user_id=user_id, actor=actor)

    @event("MemberRemoved")
    def _remove_member(self, *, user_id: UUID, actor: str) -> None:
        del self.members[user_id]

    def check_is_member(self, user_id: UUID) -> None:
        """Raises NotFound if the user is not a member."""
        if user_id not in self.members:
            raise NotFound("no such member")

    def check_keeps_an_owner(self, leaving_owner: UUID) -> None:
        """Raises if ``leaving_owner`` is the project's last owner."""
        owners = [uid for uid, role in self.members.items() if role == Role.OWNER]
        if owners == [leaving_owner]:
            raise InvariantViolated("a project must keep at least one owner")

    def configure_webhook(self, *, webhook_id: UUID, url: str, event_types: list[str], encrypted_secret: str,
                          secret_hint: str, actor: str) -> None:
        """Registers a webhook endpoint; its signing secret is recorded only encrypted with the server key."""
        if len(self.webhooks) >= MAX_WEBHOOKS:
            raise InvariantViolated(f"a project has at most {MAX_WEBHOOKS} webhooks")
        if webhook_id in self.webhooks:
            raise InvariantViolated("a webhook with this id exists")
        self._configure_webhook(webhook_id=webhook_id, url=url, event_types=list(event_types),
                                encrypted_secret=encrypted_secret, secret_hint=secret_hint, actor=actor)

    @event("WebhookConfigured")
    def _configure_webhook(self, *, webhook_id: UUID, url: str, event_types: list[str], encrypted_secret: str,
                           secret_hint: str, actor: str) -> None:
        # Streams recorded before webhooks existed rebuild through __init__ too, so the dict is always there.
        self.webhooks[webhook_id] = Webhook(url=url, event_types=tuple(event_types))

    def remove_webhook(self, *, webhook_id: UUID, actor: str) -> None:
        """Removes a webhook; notifications not yet delivered to it are dropped."""
        if webhook_id not in self.webhooks:
            raise NotFound("no such webhook")
        self._remove_webhook(webhook_id=webhook_id, actor=actor)

    @event("WebhookRemoved")
    def _remove_webhook(self, *, webhook_id: UUID, actor: str) -> None:
        del self.webhooks[webhook_id]

"""The management API's token commands: bulk revocation and deleting a client (which revokes its tokens).

Both decide on the event streams (the client's own stream, each token's own stream) and select candidate tokens
from the token lookup model only after it has caught up with the store, so a token issued just before the command
is revoked with the rest. One command saves all its events in one transaction: a bulk revocation is never
half-done.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from uuid import UUID, uuid4

from application.clients import check_scope_held, live_client
from application.oauth.revocation import Revoker
from application.ports import TokenIndex
from application.store import Keyledger
from domain.client import Client
from domain.errors import InvalidArgument, NotFound
from domain.ids import client_aggregate_id

CLIENT_DELETED = "client deleted"  # the reason of the revocations a client's deletion records
# Seconds a bulk command's selection waits at most for the token lookup model: a deletion's late pass comes after
# its own transaction of all the client's tokens (60,000 of them took the model more than a request's 5 s to apply).
BULK_WAIT = 60.0


@dataclass(frozen=True, slots=True)
class RevokeTokens:
    """Revoke every live token of a project matching exactly one of ``token_id``, ``client_id``, ``user_id``."""

    project_id: UUID
    actor: str
    token_id: UUID | None = None
    client_id: str | None = None
    user_id: UUID | None = None

    def check_one_filter(self) -> None:
        """Exactly one filter: a request naming none would otherwise revoke the whole project."""
        given = [f for f in (self.token_id, self.client_id, self.user_id) if f is not None]
        if len(given) != 1:
            raise InvalidArgument("name exactly one of token_id, client_id or user_id")


@dataclass(frozen=True, slots=True)
class DeleteClient:
    """Revoke a project's client and every live token it was issued.

    ``caller_permissions``: what the caller holds in the project; a caller may delete only a client whose scope it
    holds itself, as for creating or rotating one.
    """

    project_id: UUID
    client_id: str
    actor: str
    caller_permissions: frozenset[str]


@dataclass(frozen=True, slots=True)
class TokenAdmin:
    """Handles the management API's revocation commands."""

    app: Keyledger
    revoker: Revoker
    index: TokenIndex

    def revoke_tokens(self, command: RevokeTokens) -> int:
        """Revokes the matching live tokens in one transaction; returns how many."""
        command.check_one_filter()

        def select() -> list[UUID]:
            return self.index.live_matching(project_id=command.project_id, token_id=command.token_id,
                                            client_id=command.client_id, user_id=command.user_id,
                                            now=self.revoker.clock.now())

        return self.revoker.revoke_ids(select, reason="revoked by project administrator", actor=command.actor,
                                       wait=BULK_WAIT)

    def delete_client(self, command: DeleteClient) -> int:
        """Revokes the client and its live tokens in one transaction; returns how many tokens.

        The tokens are those the lookup model lists once it caught up with the store, before that transaction
        commits; tokens issued to the client in the meantime (requests served while the command loaded and revoked
        the others) are revoked by further passes, each after the model caught up again, until one finds none.
        Once the client's ``ClientRevoked`` is committed no token can be issued to it any more, even by a batch
        decided before (the group commit saves a client's tokens only if its stream is still at the version they
        were decided on), so the passes end; the command answers after them.

        A deletion that committed but did not finish its passes (its caller got a 503) is finished by the next
        DELETE of the client, which then answers 404 as for any client that is gone.

        Raises:
            NotFound: no such live client in this project (a client of another project is not found either).
            Forbidden: the client holds scope the caller does not (``check_scope_held``); nothing is revoked.
        """

        def select() -> list[UUID]:
            return self.index.live_matching(project_id=command.project_id, client_id=command.client_id,
                                            now=self.revoker.clock.now())

        def revoked_client() -> list[Client]:
            client = live_client(self.app, command.project_id, command.client_id)
            client.revoke(actor=command.actor)
            return [client]

        revocation_id = uuid4()  # one command: the late passes' revocations are grouped with the first's
        try:
            client = live_client(self.app, command.project_id, command.client_id)
        except NotFound:
            if self._revoked_in_project(command):
                self._revoke_late(select, command.actor, revocation_id)
            raise
        check_scope_held(client, command.caller_permissions, "delete")
        revoked = self.revoker.revoke_ids(select, reason=CLIENT_DELETED, actor=command.actor, extra=revoked_client,
                                          revocation_id=revocation_id, wait=BULK_WAIT)
        return revoked + self._revoke_late(select, command.actor, revocation_id)

    def _revoked_in_project(self, command: DeleteClient) -> bool:
        client = self.app.find(client_aggregate_id(command.client_id), Client, copy=False)
        return client is not None and client.project_id == command.project_id and client.revoked

    def _revoke_late(self, select: Callable[[], Sequence[UUID]], actor: str, revocation_id: UUID) -> int:
        """Passes after a client's revocation, until one finds none of its tokens live (see ``delete_client``)."""
        return self.revoker.revoke_until_none(select, reason=CLIENT_DELETED, actor=actor,
                                              revocation_id=revocation_id, wait=BULK_WAIT)

"""Refusal aggregate: one refused token request, recorded so auditors see failed attempts as well as successes.

Each refusal is a fresh aggregate (a uuid4 of its own, version 1): recording it never contends with another
request's stream, so refusals can be saved in the token endpoint's group-commit batches like issued tokens. The
presented secret, password or refresh token is never recorded; neither is a ``client_id`` that looks like a secret.
"""

from uuid import UUID

from eventsourcing.domain import event

from domain.entity import Entity

# Why a token request was refused: the audit's vocabulary, finer than the RFC 6749 error code the client sees.
UNSUPPORTED_GRANT = "unsupported_grant_type"
MISSING_PARAMETER = "missing_parameter"
CLIENT_AUTHENTICATION_MISSING = "client_authentication_missing"
CLIENT_SECRET_MALFORMED = "client_secret_malformed"  # noqa: S105 - a reason code, not a secret
CLIENT_UNKNOWN = "client_unknown"
CLIENT_SECRET_WRONG = "client_secret_wrong"  # noqa: S105 - a reason code, not a secret
CLIENT_SECRET_EXPIRED = "client_secret_expired"  # noqa: S105 - a reason code, not a secret
CLIENT_REVOKED = "client_revoked"
PUBLIC_CLIENT_WITH_SECRET = "public_client_with_secret"  # noqa: S105 - a reason code, not a secret
GRANT_NOT_ALLOWED = "grant_not_allowed"
INVALID_SCOPE = "invalid_scope"
PASSWORD_WRONG = "password_wrong"  # noqa: S105 - a reason code, not a secret
USER_UNKNOWN = "user_unknown"
USER_DISABLED = "user_disabled"
REFRESH_TOKEN_MALFORMED = "refresh_token_malformed"  # noqa: S105 - a reason code, not a secret
REFRESH_TOKEN_UNKNOWN = "refresh_token_unknown"  # noqa: S105 - a reason code, not a secret
REFRESH_TOKEN_REUSED = "refresh_token_reused"  # noqa: S105 - a reason code, not a secret
REFRESH_TOKEN_REVOKED = "refresh_token_revoked"  # noqa: S105 - a reason code, not a secret
REFRESH_TOKEN_EXPIRED = "refresh_token_expired"  # noqa: S105 - a reason code, not a secret
REFRESH_TOKEN_CONFLICT = "refresh_token_concurrently_used"  # noqa: S105 - a reason code, not a secret


class Refusal(Entity):
    """A refused token request. ``project_id`` is the project of the client or token concerned when known."""

    @staticmethod
    def create_id(refusal_id: UUID) -> UUID:
        """A fresh uuid4 per refusal: no two refusals share a stream."""
        return refusal_id

    @event("TokenRequestRefused")
    def __init__(
        self,
        *,
        refusal_id: UUID,
        project_id: UUID | None,
        grant_type: str,
        client_id: str | None,
        user_id: UUID | None,
        token_id: UUID | None,
        reason: str,
        error: str,
        source: str | None,
        user_agent: str | None,
        actor: str,
    ) -> None:
        self.project_id = project_id
        self.reason = reason


class PasswordChangeRefusal(Entity):
    """A refused password change (``POST /v1/me/password``) whose current password was wrong: whoever holds a
    person's access token and guesses their password could take the account over, so each such guess is recorded,
    as a refused login is (``TokenRequestRefused``), within the same attempt limits. Neither password is recorded."""

    @staticmethod
    def create_id(refusal_id: UUID) -> UUID:
        """A fresh uuid4 per refusal, as ``Refusal``'s: recording it never contends with the person's stream."""
        return refusal_id

    @event("PasswordChangeRefused")
    def __init__(self, *, refusal_id: UUID, user_id: UUID, reason: str, source: str | None, user_agent: str | None,
                 actor: str) -> None:
        self.user_id = user_id
        self.reason = reason

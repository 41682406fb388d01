"""RFC 6749 section 5.2 error responses, one class per error code (authlib's convention)."""

from typing import ClassVar


class OAuthError(Exception):
    """An error answered to the client in the body of RFC 6749 section 5.2.

    Attributes:
        error: the RFC error code.
        status_code: the HTTP status (400, or 401 for invalid_client, always with a Basic challenge).
        description: a human-readable ``error_description``; never contains a presented secret.
        reason: why, in the audit ledger's finer vocabulary (``domain.refusal``); the client never sees it.
        counted: whether the abuse limits already counted this refusal as a failure of its source address.
        aggregates: the refusal's unsaved aggregate (TokenRequestRefused), to be saved before the error is answered.
        context: what the decision knew about the refused request (``application.oauth.refusals.RefusalContext``).
    """

    error: ClassVar[str] = "invalid_request"
    status_code: ClassVar[int] = 400

    def __init__(self, description: str = "", *, reason: str | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.reason = reason or self.error
        self.counted = False
        self.aggregates: tuple[object, ...] = ()
        self.context: object = None

    def about(self, context: object, *, counted: bool = False) -> "OAuthError":
        """Attaches what the decision knew (``RefusalContext``) and whether the limits counted it; returns self."""
        self.context = context
        self.counted = counted
        return self


class InvalidRequest(OAuthError):
    """The request is missing a parameter, repeats one, or is otherwise malformed (RFC 6749 section 5.2)."""

    error = "invalid_request"


class InvalidClient(OAuthError):
    """Client authentication failed (RFC 6749 section 5.2); 401 with a Basic challenge (RFC 9110 section 15.5.2)."""

    error = "invalid_client"
    status_code = 401


class InvalidGrant(OAuthError):
    """The grant (credentials, refresh token) is invalid, expired, revoked or reused (RFC 6749 section 5.2)."""

    error = "invalid_grant"


class UnauthorizedClient(OAuthError):
    """The authenticated client may not use this grant type (RFC 6749 section 5.2)."""

    error = "unauthorized_client"


class UnsupportedGrantType(OAuthError):
    """The grant type is not supported by the server (RFC 6749 section 5.2)."""

    error = "unsupported_grant_type"


class InvalidScope(OAuthError):
    """The requested scope is invalid, unknown, or exceeds what the client was given (RFC 6749 section 5.2)."""

    error = "invalid_scope"


class TemporarilyUnavailable(OAuthError):
    """The server cannot answer now (RFC 6749 section 4.1.2.1), for example during a database outage."""

    error = "temporarily_unavailable"
    status_code = 503


class TooManyAttempts(OAuthError):
    """Too many failed authentications of this account, client or source address: 429 with ``Retry-After``.

    RFC 6749 section 5.2 has no code for this. We answer HTTP 429 (RFC 6585) with ``Retry-After`` in seconds and
    ``temporarily_unavailable``, the code RFC 6749 registers for "try again later" (section 4.1.2.1), rather than
    ``invalid_grant``: a client reading only the body learns to wait instead of to ask the person for their password
    again, and the answer is the same whether or not the account exists, and whichever key is locked.
    """

    error = "temporarily_unavailable"
    status_code = 429

    def __init__(self, retry_after: int, description: str = "too many failed attempts; try again later") -> None:
        super().__init__(description, reason="locked")
        self.retry_after = max(1, int(retry_after))

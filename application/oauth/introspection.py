"""Token introspection, RFC 7662: a project's client asks whether a token is active, and whose it is."""

from dataclasses import dataclass
from typing import Any

from application.oauth.revocation import TokenFinder
from application.ports import Clock
from domain.client import Client
from domain.token import Token, TokenKind

INACTIVE: dict[str, Any] = {"active": False}


@dataclass(frozen=True, slots=True)
class IntrospectionEndpoint:
    """Answers RFC 7662 section 2.2 for tokens of the calling client's own project; anything else is inactive."""

    finder: TokenFinder
    clock: Clock
    issuer: str
    audience: str

    def handle(self, client: Client, token: str | None) -> dict[str, Any]:
        """Returns the introspection response. Nothing but ``{"active": false}`` for tokens the client may not see.

        Access tokens must pass the same strict JWT validation as on the API; then, like refresh tokens, they are
        decided on their own event stream, which holds every issuance and revocation the instant it is answered.
        """
        if not token:
            return dict(INACTIVE)
        found = self.finder.find(token)
        if found is None or found.project_id is None or found.project_id != client.project_id:
            return dict(INACTIVE)
        if not found.is_live(self.clock.now()):
            return dict(INACTIVE)
        return self.describe(found)

    def describe(self, token: Token) -> dict[str, Any]:
        """The active token's metadata (section 2.2)."""
        is_access = token.kind == TokenKind.ACCESS
        body: dict[str, Any] = {
            "active": True,
            "scope": token.scope,
            "client_id": token.client_id,
            "sub": str(token.user_id or token.client_id),
            "exp": int(token.expires_at.timestamp()),
            "iat": int(token.issued_at.timestamp()),
            "iss": self.issuer,
            "aud": self.audience,
            "token_type": "Bearer" if is_access else "refresh_token",
            "project_id": str(token.project_id),
        }
        if is_access:
            body["jti"] = str(token.id)
        return body

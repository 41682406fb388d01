"""Token introspection, RFC 7662: a project's client asks whether a token is active, and whose it is.

A project's client may see its own project's tokens and the dashboard tokens (access and refresh) of the project's
current members: those are the credentials that can act on the project, so the project's resource servers must be
able to check them. Anything else is ``{"active": false}``, exactly as an unknown token.
"""

from dataclasses import dataclass
from typing import Any

from application.oauth.revocation import TokenFinder
from application.ports import Clock
from domain.client import Client
from domain.project import Project
from domain.token import Token, TokenKind
from domain.user import User

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
        if found is None or not found.is_live(self.clock.now()) or not self.visible_to(client, found):
            return dict(INACTIVE)
        if self.ended_session(found):
            return dict(INACTIVE)
        return self.describe(found)

    def ended_session(self, token: Token) -> bool:
        """Whether ``token`` is a refresh token the token endpoint would refuse although its stream shows it live: its
        family ended over a reuse (``Token.family_over``), or the person's account was disabled, or their password
        changed after the login, and the revocations that follow have not reached it yet (or timed out, or a walk
        on the streams stopped short). RFC 7662 section 2.2: ``active`` means the token can be used now."""
        if token.kind != TokenKind.REFRESH:
            return False
        app = self.finder.app
        if token.family_id is not None and token.family_id != token.id:
            root = app.find(token.family_id, Token, copy=False)
            if root is None or root.family_over():
                return True
        if token.user_id is None:
            return False
        user = app.find(token.user_id, User, copy=False)
        return user is None or user.ended_session(issued_at=token.issued_at, account_version=token.account_version)

    def visible_to(self, client: Client, token: Token) -> bool:
        """Whether ``client`` may learn about ``token``: a token of its project, or a current member's login
        (decided on the project's own stream, so a removed member's tokens turn inactive for it at once)."""
        if token.project_id is not None:
            return token.project_id == client.project_id
        if token.user_id is None:
            return False
        project = self.finder.app.find(client.project_id, Project, copy=False)
        return project is not None and project.role_of(token.user_id) is not None

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
            # A refresh token is redeemed only here, at the token endpoint (RFC 6749 section 1.5), never presented to
            # the API: its audience is this server, so a resource server that checks ``aud`` refuses it as a bearer.
            "aud": self.audience if is_access else self.issuer,
            "token_type": "Bearer" if is_access else "refresh_token",
            # The token's id for both kinds: a refresh token is opaque, but its id is what the listing, the audit
            # ledger and bulk revocation (``token_id``) name it by.
            "jti": str(token.id),
        }
        if token.project_id is not None:
            body["project_id"] = str(token.project_id)
        return body

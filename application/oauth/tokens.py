"""Minting tokens: RFC 9068 access-token claims, refresh tokens, and their TokenIssued events."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple
from uuid import UUID, uuid4

from application.ports import CredentialMinter, SecretHasher, TokenSigner
from domain.ids import keyring_id, refresh_token_aggregate_id
from domain.token import Token, TokenKind


@dataclass(frozen=True, slots=True)
class Grant:
    """What a token request was granted: who, through which client, for which project, with which scope."""

    grant_type: str
    client_id: str
    project_id: UUID | None
    user_id: UUID | None
    scope: str
    actor: str
    # The version of the person's account stream the grant was decided on (None for a client's grant): recorded on
    # the tokens, it tells a session older than a password change (``User.predates_password_change``).
    account_version: int | None = None


class SignedAccessToken(NamedTuple):
    """An access token as minted: its value, its unsaved aggregate, and ``key_guard``, the key ring's stream and the
    version its signing key was active at. The token must be saved guarded by it: a ring that moved meanwhile may
    have revoked that key (an emergency rotation), and a token answered then would be refused from the start."""

    value: str
    token: Token
    key_guard: tuple[UUID, int]


@dataclass(frozen=True, slots=True)
class IssuedTokens:
    """The token response of RFC 6749 section 5.1 plus the aggregates to save."""

    access_token: str
    expires_in: int
    scope: str
    refresh_token: str | None
    aggregates: tuple[Token, ...]  # saved in this order: their events take consecutive positions in it
    # (stream id, version) pairs the decision relied on, which must not have changed when ``aggregates`` are saved:
    # the key ring the access token was signed on (``SignedAccessToken.key_guard``), the client a
    # client_credentials token was decided on, so a client revoked meanwhile issues nothing, the account of a
    # login or refresh, so an account disabled meanwhile gets nothing, and a rotation's family's first refresh token,
    # so a family ended meanwhile (``Token.end_family``) gets nothing.
    guards: tuple[tuple[UUID, int], ...] = ()
    # The refresh token a refresh_token grant used up: its answer instant is recorded (application.oauth.in_flight).
    rotated: UUID | None = None
    # That token's version as the decision read it: a save that conflicted may be decided again only if it still is.
    rotated_from: int | None = None

    def response(self) -> dict[str, str | int]:
        """Returns the RFC 6749 section 5.1 JSON body."""
        body: dict[str, str | int] = {"access_token": self.access_token, "token_type": "Bearer",
                                      "expires_in": self.expires_in, "scope": self.scope}
        if self.refresh_token is not None:
            body["refresh_token"] = self.refresh_token
        return body


def lifetime_within(ttl: int, now: datetime, ends_at: datetime | None) -> int:
    """``ttl`` seconds, cut so that a token issued at ``now`` (in whole seconds, as ``TokenMint.access_token`` issues
    it) expires by ``ends_at`` at the latest: a login's absolute lifetime (its family's end) bounds its access
    tokens as it bounds its refresh tokens. Less than 1 when ``ends_at`` falls within the second ``now`` is in
    (``exp`` is a whole second: such a token could not outlive its issuance)."""
    if ends_at is None:
        return ttl
    return min(ttl, int((ends_at - now.replace(microsecond=0)).total_seconds()))


@dataclass(frozen=True, slots=True)
class TokenMint:
    """Builds signed access tokens and opaque refresh tokens with their TokenIssued events."""

    signer: TokenSigner
    minter: CredentialMinter
    secrets: SecretHasher
    issuer: str
    audience: str

    def access_token(self, grant: Grant, now: datetime, ttl: int, family_id: UUID | None = None,
                     parent_id: UUID | None = None, *, token_id: UUID | None = None) -> SignedAccessToken:
        """Returns a signed RFC 9068 JWT, its Token aggregate (id = jti: ``token_id``, or a new random one) and the
        guard its save needs."""
        jti = token_id or uuid4()
        issued_at = now.replace(microsecond=0)
        expires_at = issued_at + timedelta(seconds=ttl)
        claims: dict[str, object] = {
            "iss": self.issuer, "aud": self.audience, "sub": str(grant.user_id or grant.client_id),
            "client_id": grant.client_id, "iat": int(issued_at.timestamp()), "exp": int(expires_at.timestamp()),
            "jti": str(jti), "scope": grant.scope,
        }
        if grant.project_id is not None:
            claims["project_id"] = str(grant.project_id)
        value, ring_version = self.signer.signed(claims)
        # A login's token (password or refresh_token grant) is held by a public client with no secret: its keyed
        # hash lets the holder prove the string is this very token (``domain.token.proves``). A client_credentials
        # token's client authenticates with its secret, and its issuance is the hot path: no hash.
        value_hash = None if family_id is None else self.secrets.hash(value)
        token = Token(token_id=jti, kind=TokenKind.ACCESS, project_id=grant.project_id, client_id=grant.client_id,
                      user_id=grant.user_id, scope=grant.scope, grant_type=grant.grant_type, issued_at=issued_at,
                      expires_at=expires_at, family_id=family_id, parent_id=parent_id, actor=grant.actor,
                      family_expires_at=None, value_hash=value_hash, account_version=grant.account_version)
        return SignedAccessToken(value, token, (keyring_id(), ring_version))

    def refresh_token(self, grant: Grant, now: datetime, ttl: int, *, family_ttl: int,
                      parent: Token | None = None) -> tuple[str, Token]:
        """Returns an opaque refresh token and its Token aggregate.

        A login starts a family (its id is the first refresh token's id) with an absolute lifetime; a rotation's
        child inherits the family and its end, and never outlives it.
        """
        value = self.minter.refresh_token()
        token_id = refresh_token_aggregate_id(self.secrets.hash(value))
        if parent is None:
            family_id, family_end, parent_id = token_id, now + timedelta(seconds=family_ttl), None
        else:
            family_id, family_end, parent_id = parent.family_id, parent.family_expires_at, parent.id
        expires_at = now + timedelta(seconds=ttl)
        if family_end is not None:
            expires_at = min(expires_at, family_end)
        token = Token(token_id=token_id, kind=TokenKind.REFRESH, project_id=grant.project_id,
                      client_id=grant.client_id, user_id=grant.user_id, scope=grant.scope,
                      grant_type=grant.grant_type, issued_at=now, expires_at=expires_at,
                      family_id=family_id, parent_id=parent_id, actor=grant.actor, family_expires_at=family_end,
                      value_hash=None, account_version=grant.account_version)
        return value, token

"""Lifetime policy and grant rules, written once.

Server defaults per grant and client kind, per-client overrides inside server-wide maximums. The HTTP layer and
the application read lifetimes only from here, so a client's representation and the tokens it gets cannot disagree.
"""

from dataclasses import dataclass
from enum import StrEnum


class GrantType(StrEnum):
    """OAuth2 grant types keyledger implements (RFC 6749 sections 4.3, 4.4 and 6)."""

    PASSWORD = "password"  # noqa: S105 - a grant type name, not a secret
    CLIENT_CREDENTIALS = "client_credentials"
    REFRESH_TOKEN = "refresh_token"  # noqa: S105 - a grant type name, not a secret


DASHBOARD_GRANTS: frozenset[GrantType] = frozenset({GrantType.PASSWORD, GrantType.REFRESH_TOKEN})
PROJECT_CLIENT_GRANTS: frozenset[GrantType] = frozenset({GrantType.CLIENT_CREDENTIALS})

MIN_ACCESS_TOKEN_TTL = 5
MAX_ACCESS_TOKEN_TTL = 24 * 3600
MAX_REFRESH_REUSE_LEEWAY = 60  # seconds; a straggler is late by milliseconds, a longer window only hides replays


@dataclass(frozen=True, slots=True)
class LifetimePolicy:
    """Token and secret lifetimes, in seconds.

    Attributes:
        dashboard_access_token_ttl: access tokens from the password and refresh_token grants.
        client_access_token_ttl: default for access tokens from the client_credentials grant.
        refresh_token_ttl: each refresh token's own lifetime.
        refresh_family_ttl: absolute lifetime of a login's refresh-token family.
        client_secret_ttl: default lifetime of a client secret.
        max_client_secret_ttl: no client may ask for longer; no secret lives forever.
        refresh_reuse_leeway: seconds after a rotation was answered during which presenting the used refresh token
            again is still taken for a straggler of a concurrent refresh (refused, nothing revoked) rather than a
            replay (which revokes the family). 0, the default, is strict: only what arrived before the answer.
    """

    dashboard_access_token_ttl: int = 15 * 60
    client_access_token_ttl: int = 3600
    refresh_token_ttl: int = 30 * 24 * 3600
    refresh_family_ttl: int = 90 * 24 * 3600
    client_secret_ttl: int = 365 * 24 * 3600
    max_client_secret_ttl: int = 2 * 365 * 24 * 3600
    refresh_reuse_leeway: int = 0

    def client_access_ttl(self, override: int | None) -> int:
        """Returns the access-token lifetime of a client, its override clamped to the server's bounds."""
        if override is None:
            return self.client_access_token_ttl
        return max(MIN_ACCESS_TOKEN_TTL, min(MAX_ACCESS_TOKEN_TTL, override))

    def secret_ttl(self, requested: int | None) -> int:
        """Returns a new client secret's lifetime: the requested one (or the default), never above the maximum.

        Raises:
            ValueError: a requested lifetime that is not positive.
        """
        if requested is not None and requested <= 0:
            raise ValueError("a secret lifetime must be positive")
        return min(self.client_secret_ttl if requested is None else requested, self.max_client_secret_ttl)

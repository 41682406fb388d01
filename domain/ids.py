"""Deterministic identifiers.

Aggregates whose identity follows from a natural key (an email, a client_id, a refresh token's keyed hash) get a
uuid5 in a namespace of their own, so that the event store's unique (originator_id, version) constraint enforces
uniqueness atomically with the save: the pattern of eventsourcing's own examples.
"""

from uuid import UUID, uuid5

NS_EMAIL = UUID("6f1d1c0e-4b0a-4d43-9a41-5f3c2a0f7e01")
NS_CLIENT = UUID("6f1d1c0e-4b0a-4d43-9a41-5f3c2a0f7e02")
NS_REFRESH = UUID("6f1d1c0e-4b0a-4d43-9a41-5f3c2a0f7e03")
NS_KEYRING = UUID("6f1d1c0e-4b0a-4d43-9a41-5f3c2a0f7e04")
NS_SIGNING_KEY = UUID("6f1d1c0e-4b0a-4d43-9a41-5f3c2a0f7e05")
NS_LOGIN_ACCESS = UUID("6f1d1c0e-4b0a-4d43-9a41-5f3c2a0f7e06")

_KEYRING_ID = uuid5(NS_KEYRING, "keyring")

DASHBOARD_CLIENT_ID = "dashboard"
SYSTEM_ACTOR = "system"


def normalize_email(email: str) -> str:
    """Returns the canonical form of an email address used for uniqueness and look-up."""
    return email.strip().lower()


def email_index_id(email: str) -> UUID:
    """Returns the id of the index aggregate that reserves ``email``."""
    return uuid5(NS_EMAIL, normalize_email(email))


def client_aggregate_id(client_id: str) -> UUID:
    """Returns the id of the Client aggregate whose public ``client_id`` is given."""
    return uuid5(NS_CLIENT, client_id)


def refresh_token_aggregate_id(keyed_hash: str) -> UUID:
    """Returns the id of the Token aggregate of a refresh token, from the token's keyed hash (never the token)."""
    return uuid5(NS_REFRESH, keyed_hash)


def login_access_token_id(family_id: UUID) -> UUID:
    """Returns the id (jti) of the access token a login issued with the refresh token that began ``family_id``.

    No stream names it (a rotation's access token is named by its parent's stream): derived from the family, a
    revocation that cannot wait for the token lookup model still finds it (``Revoker.revoke_lineage``). A jti is
    no secret; it grants nothing without the signed token.
    """
    return uuid5(NS_LOGIN_ACCESS, str(family_id))


def keyring_id() -> UUID:
    """Returns the id of the platform's single signing-key ring (computed once: every request's gate asks)."""
    return _KEYRING_ID


def signing_key_id(kid: str) -> UUID:
    """Returns the id of the SigningKey aggregate published under ``kid``."""
    return uuid5(NS_SIGNING_KEY, kid)


def user_actor(user_id: UUID) -> str:
    """Returns the actor string of a person."""
    return f"user:{user_id}"


def client_actor(client_id: str) -> str:
    """Returns the actor string of an OAuth client."""
    return f"client:{client_id}"

"""The scope vocabulary and the role permission table.

Scopes are what a token may do; roles are what a member may do. A user token's effective permissions in a project
are its role's permissions intersected with its scopes; a client token's are its client's scopes, inside its own
project only. This table is the single place these rules are written.
"""

from enum import StrEnum


class Role(StrEnum):
    """A member's role in a project."""

    OWNER = "owner"
    ADMIN = "admin"
    DEVELOPER = "developer"
    AUDITOR = "auditor"


SCOPES: dict[str, str] = {
    "project:read": "Read the project",
    "project:write": "Rename or delete the project",
    "members:read": "List the project's members",
    "members:write": "Add, change and remove members",
    "clients:read": "List the project's clients (API keys)",
    "clients:write": "Create, rotate and revoke clients",
    "tokens:read": "List token metadata",
    "tokens:revoke": "Revoke tokens",
    "audit:read": "Read the audit ledger",
}

ALL_SCOPES: frozenset[str] = frozenset(SCOPES)

# Permissions beyond scopes that only roles carry.
MANAGE_OWNERS = "owners:manage"
DELETE_PROJECT = "project:delete"

ROLE_PERMISSIONS: dict[Role, frozenset[str]] = {
    Role.OWNER: ALL_SCOPES | {MANAGE_OWNERS, DELETE_PROJECT},
    Role.ADMIN: ALL_SCOPES,
    Role.DEVELOPER: frozenset(
        {"project:read", "members:read", "clients:read", "clients:write", "tokens:read", "tokens:revoke"}
    ),
    Role.AUDITOR: frozenset({"project:read", "members:read", "clients:read", "tokens:read", "audit:read"}),
}

DEFAULT_CLIENT_SCOPE: tuple[str, ...] = ("project:read", "clients:read", "tokens:read")


def parse_scope(raw: str | None) -> tuple[str, ...]:
    """Splits an RFC 6749 section 3.3 scope string into a sorted tuple of unique scope tokens.

    The separator is the space character alone (``scope-token *( SP scope-token )``); runs of spaces are forgiven.
    A tab, a line break or any other whitespace stays inside its token, which then names no scope and is refused as
    unknown, instead of being read as a separator the client may not have meant.
    """
    if not raw:
        return ()
    return tuple(sorted({token for token in raw.split(" ") if token}))


def unknown_scopes(scopes: tuple[str, ...]) -> tuple[str, ...]:
    """Returns the scopes of ``scopes`` that the vocabulary does not define."""
    return tuple(s for s in scopes if s not in ALL_SCOPES)


def user_permissions(role: Role | None, token_scopes: tuple[str, ...]) -> frozenset[str]:
    """Returns a user token's permissions in a project: the role's permissions intersected with the token's scopes.

    Role-only permissions (managing owners, deleting the project) need the role and the scope they refine.
    """
    if role is None:
        return frozenset()
    granted = ROLE_PERMISSIONS[role]
    scopes = frozenset(token_scopes)
    allowed = granted & scopes & ALL_SCOPES  # a scope string naming a role-only permission grants nothing
    if MANAGE_OWNERS in granted and "members:write" in scopes:
        allowed |= {MANAGE_OWNERS}
    if DELETE_PROJECT in granted and "project:write" in scopes:
        allowed |= {DELETE_PROJECT}
    return frozenset(allowed)


def needed_to_change_member(current: Role | None, new: Role | None) -> frozenset[str]:
    """Returns the permissions a command moving a member from role ``current`` to role ``new`` needs.

    Adding is ``None -> role``, removing is ``role -> None``. Every change needs ``members:write``; one that touches
    the owner role on either side (adding an owner, promoting to or demoting from owner, removing an owner) also needs
    ``owners:manage``, which only owners hold: only owners manage owners.
    """
    if Role.OWNER in (current, new):
        return frozenset({"members:write", MANAGE_OWNERS})
    return frozenset({"members:write"})

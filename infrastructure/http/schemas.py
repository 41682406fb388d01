"""msgspec Structs at the edge: request bodies (strict: unknown fields refused) and response shapes."""

from typing import Annotated
from uuid import UUID

import msgspec

Email = Annotated[str, msgspec.Meta(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
Password = Annotated[str, msgspec.Meta(min_length=10, max_length=1024)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"\S")]


class SignupBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /v1/signup``."""

    email: Email
    password: Password
    project_name: Name | None = None


class PasswordChangeBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /v1/me/password``."""

    current_password: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
    new_password: Password


class ProjectBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /v1/projects``."""

    name: Name


class UserOut(msgspec.Struct):
    """A user as shown to itself."""

    id: str
    email: str


class ProjectOut(msgspec.Struct):
    """A project."""

    id: str
    name: str


class ClientOut(msgspec.Struct, omit_defaults=True):
    """A client (API key); ``client_secret`` only in the response that created it."""

    client_id: str
    project_id: str
    name: str
    scope: str
    grant_types: list[str]
    secret_hint: str
    secret_expires_at: str
    access_token_ttl: int
    created_at: str
    status: str | None = None
    secret_rotated_at: str | None = None
    previous_secret_expires_at: str | None = None
    last_used_at: str | None = None
    revoked_at: str | None = None
    client_secret: str | None = None


class SignupOut(msgspec.Struct):
    """``POST /v1/signup`` answer."""

    user: UserOut
    project: ProjectOut
    client: ClientOut


class Membership(msgspec.Struct):
    """One of the caller's memberships."""

    project_id: str
    role: str


class MeOut(msgspec.Struct):
    """``GET /v1/me`` answer."""

    id: str
    email: str
    memberships: list[Membership]


ClientIdField = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class RevokeTokensBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /v1/projects/{id}/tokens/revoke``: exactly one filter."""

    token_id: UUID | None = None
    client_id: ClientIdField | None = None
    user_id: UUID | None = None


class RevokedOut(msgspec.Struct):
    """How many live tokens a command revoked."""

    revoked: int


class TokenOut(msgspec.Struct, omit_defaults=True):
    """A token's metadata: never its value."""

    token_id: str
    kind: str
    client_id: str
    scope: str
    grant_type: str
    issued_at: str
    expires_at: str
    status: str
    project_id: str | None = None
    user_id: str | None = None
    family_id: str | None = None
    parent_id: str | None = None
    ended_at: str | None = None
    ended_reason: str | None = None
    ended_by: str | None = None


class TokenPage(msgspec.Struct):
    """A page of tokens; ``next_cursor`` is null on the last page."""

    items: list[TokenOut]
    next_cursor: str | None


Seconds = Annotated[int, msgspec.Meta(ge=0, le=10**9)]


class ClientBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /v1/projects/{id}/clients``: lifetimes in seconds (bounds checked by the lifetime policy)."""

    name: Name
    scope: Annotated[str, msgspec.Meta(max_length=1000)] | None = None
    access_token_ttl: Seconds | None = None
    secret_ttl: Seconds | None = None


class RotateSecretBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST .../clients/{client_id}/rotate-secret``."""

    grace_period: Seconds = 0


class ClientPage(msgspec.Struct):
    """A page of clients; ``next_cursor`` is null on the last page."""

    items: list[ClientOut]
    next_cursor: str | None



RoleName = Annotated[str, msgspec.Meta(pattern="^(owner|admin|developer|auditor)$")]


class MemberBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /v1/projects/{id}/members``: a registered user's email and a role."""

    email: Email
    role: RoleName


class RoleBody(msgspec.Struct, forbid_unknown_fields=True):
    """``PATCH /v1/projects/{id}/members/{user_id}``."""

    role: RoleName


class MemberOut(msgspec.Struct):
    """A member of a project."""

    user_id: str
    email: str
    role: str
    since: str


class MemberPage(msgspec.Struct):
    """A page of members; ``next_cursor`` is null on the last page."""

    items: list[MemberOut]
    next_cursor: str | None

"""msgspec Structs at the edge: request bodies (strict: unknown fields refused) and response shapes."""

from typing import Annotated

import msgspec

Email = Annotated[str, msgspec.Meta(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
Password = Annotated[str, msgspec.Meta(min_length=10, max_length=1024)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"\S")]


class SignupBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /v1/signup``."""

    email: Email
    password: Password
    project_name: Name | None = None


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

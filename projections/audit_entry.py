"""One audit-ledger entry per stored event, and the hash chain that makes the ledger tamper-evident.

``entry_of`` is a pure function of an event and its global position: the projection writes what it returns, and
``keyledger audit verify`` recomputes it from the event store to compare. So events must describe themselves (the
token events after issuance carry their client, user and family for that reason).

Each chain is a project's entries in position order (platform-level entries, of no project, form one more chain).
A platform-level event about a person (their dashboard tokens, refused logins, account) also gets an entry in each
project they are a member of when it happens (``fan_out``): so an entry is keyed by its position and its chain.
Such a copy leaves out where the person was (``source``, ``user_agent``): the platform's entry keeps them for the
operator, but anyone who knows a person's e-mail can add them to a project, and that project's auditors would
otherwise follow the person's addresses and devices, through every refused login on their account.
An entry's hash is SHA-256 over the previous entry's hash of the same chain and the entry's canonical content
(sorted-key compact JSON of every column but the hash), so changing, removing or inserting an entry changes every
later hash of its chain.

Secrets never enter an entry: event fields whose name marks a secret or a hash of one are left out of ``data``, and a
webhook's URL is reduced to its origin (``domain.webhooks.url_hint``: chat services put a credential in the path).
"""

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from functools import lru_cache
from typing import Any
from uuid import UUID

import msgspec

from domain.events import as_uuid, tenant_of
from domain.project import Project
from domain.token import Token
from domain.user import EmailIndex, User
from domain.webhooks import url_hint

GENESIS = "0" * 64
PLATFORM_CHAIN = UUID(int=0)

# Fields kept in columns (or in every event) rather than in ``data``.
_BASE_FIELDS = frozenset({"originator_id", "originator_version", "originator_topic", "timestamp", "actor",
                          "project_id", "client_id", "user_id", "token_id"})
# A field whose name contains one of these is never recorded...
_SECRET_MARKERS = ("secret", "password", "hash", "private", "credential", "access_token", "refresh_token")
# ...unless it is one of these, which only describe a secret.
_DESCRIBES_A_SECRET = frozenset({"secret_hint", "secret_expires_at", "previous_secret_expires_at", "secret_ttl"})
# What a person's platform-level event says of where they were: kept in the platform's entry, left out of the copies
# in their projects' chains (``AuditEntry.in_project``; see the module docstring).
PERSONAL_FIELDS = frozenset({"source", "user_agent"})


@lru_cache(maxsize=4096)
def is_secret_field(name: str) -> bool:
    """Whether an event field may hold a secret (or a hash of one) and so stays out of the ledger."""
    lowered = name.lower()
    return lowered not in _DESCRIBES_A_SECRET and any(marker in lowered for marker in _SECRET_MARKERS)


def jsonable(value: Any) -> Any:
    """An event value as JSON that survives a round trip through PostgreSQL's jsonb unchanged."""
    kind = type(value)
    if kind is str:
        return value.replace("\x00", "\ufffd") if "\x00" in value else value  # jsonb and text refuse NUL
    if value is None or kind is int or kind is bool:
        return value
    if kind is UUID:  # the commonest values after text: ids
        return str(value)
    return _converted(value)


def api_time(value: datetime) -> str:
    """A time as the audit API and its exports show it: UTC, always with six digits of microseconds (the exports
    format it in PostgreSQL the same way), so one entry reads the same in a page and in an export."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def _converted(value: Any) -> Any:
    if isinstance(value, Enum):
        return jsonable(value.value)
    if isinstance(value, set | frozenset):
        return [jsonable(v) for v in sorted(value, key=str)]
    if isinstance(value, datetime):
        return timestamp(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items() if not is_secret_field(str(k))}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return str(value)  # UUIDs and anything else: their text


def timestamp(value: datetime) -> str:
    """A timestamp's canonical text: UTC, ISO 8601, microseconds when there are any."""
    return value.astimezone(UTC).isoformat()


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def hash_of(previous: str, canonical: bytes) -> str:
    """The hash of an entry whose canonical content is ``canonical``, after the entry whose hash is ``previous``."""
    return hashlib.sha256(previous.encode() + b"\n" + canonical).hexdigest()


_encode = msgspec.json.Encoder(order="sorted").encode


def json_bytes(value: Any) -> bytes:
    """``value`` as compact JSON with sorted keys, UTF-8 (how an entry's ``data`` is stored)."""
    return _encode(value)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One ledger entry: the columns of the ``audit`` table but the hash.

    ``content`` caches the canonical content (``canonical_bytes``'s dict) once made: a member's dashboard event is
    an entry in the platform's chain and a copy in each of their projects' (``fan_out``), and the copies' content
    differs in ``project_id`` only, so the ids' text and the time's are made once per event, not once per copy.
    """

    position: int
    project_id: UUID | None
    type: str
    occurred_at: datetime
    actor_kind: str
    actor_id: str | None
    token_id: UUID | None
    client_id: str | None
    user_id: UUID | None
    stream_id: UUID
    stream_version: int
    data: dict[str, Any]
    # Not an argument, so ``dataclasses.replace`` makes a copy without it (its content is made again).
    content: dict[str, Any] | None = field(default=None, init=False, compare=False, repr=False)

    @property
    def chain(self) -> UUID:
        """The chain the entry belongs to: its project's, or the platform's."""
        return self.project_id or PLATFORM_CHAIN

    def canonical(self) -> str:
        """The entry's content as canonical JSON (what its hash covers besides the previous hash)."""
        return self.canonical_bytes().decode()

    def canonical_bytes(self) -> bytes:
        """``canonical()`` encoded as UTF-8."""
        return _encode(self._canonical_content())

    def _canonical_content(self) -> dict[str, Any]:
        """What ``canonical_bytes`` encodes (sorted-key compact JSON of it), made once per entry and cached: never
        to be changed (every later hash of the entry would follow the change)."""
        if self.content is None:
            stream_id = str(self.stream_id)  # a token event's stream is its token: the same text, made once
            content = {
                "position": self.position, "project_id": _text(self.project_id), "type": self.type,
                "occurred_at": timestamp(self.occurred_at), "actor_kind": self.actor_kind, "actor_id": self.actor_id,
                "token_id": stream_id if self.token_id is self.stream_id else _text(self.token_id),
                "client_id": self.client_id, "user_id": _text(self.user_id),
                "stream_id": stream_id, "stream_version": self.stream_version, "data": self.data,
            }
            object.__setattr__(self, "content", content)  # a cache of what the frozen fields imply
            return content
        return self.content

    def in_project(self, project_id: UUID) -> "AuditEntry":
        """The entry's copy in ``project_id``'s chain (``fan_out``): every column the same but the project, and
        ``data`` without ``PERSONAL_FIELDS`` (where the person was is the platform's to know, not the project's)."""
        data = self.data
        content = {**self._canonical_content(), "project_id": str(project_id)}
        if not PERSONAL_FIELDS.isdisjoint(data):
            data = {name: value for name, value in data.items() if name not in PERSONAL_FIELDS}
            content["data"] = data
        copy = AuditEntry(position=self.position, project_id=project_id, type=self.type, occurred_at=self.occurred_at,
                          actor_kind=self.actor_kind, actor_id=self.actor_id, token_id=self.token_id,
                          client_id=self.client_id, user_id=self.user_id, stream_id=self.stream_id,
                          stream_version=self.stream_version, data=data)
        object.__setattr__(copy, "content", content)
        return copy

    def hash_after(self, previous: str) -> str:
        """The entry's hash in its chain, after the entry whose hash is ``previous`` (GENESIS for the first)."""
        return hash_of(previous, self.canonical_bytes())


def actor_parts(actor: str) -> tuple[str, str | None]:
    """Splits an actor (``user:<id>``, ``client:<client_id>``, ``system``) into its kind and id."""
    kind, _, ident = str(actor).partition(":")
    return kind, ident or None


def _token_id(event: Any) -> UUID | None:
    if isinstance(event, Token.Event):
        return as_uuid(event.originator_id)
    return as_uuid(getattr(event, "token_id", None))


def _user_id(event: Any) -> UUID | None:
    if isinstance(event, User.Event):
        return as_uuid(event.originator_id)
    if isinstance(event, Project.ProjectCreated):
        return as_uuid(event.owner_id)
    if isinstance(event, EmailIndex.Event):
        return as_uuid(getattr(event, "user_id", None))
    return as_uuid(getattr(event, "user_id", None))


def entry_of(position: int, event: Any) -> AuditEntry:
    """The ledger entry of the event stored at ``position``."""
    kind, ident = actor_parts(getattr(event, "actor", "system"))
    data = {name: jsonable(value) for name, value in vars(event).items()
            if name not in _BASE_FIELDS and not is_secret_field(name)}
    if isinstance(event, EmailIndex.Event):
        data.pop("email", None)  # the platform's index of emails: the user's own stream records it once
    if isinstance(event, Project.WebhookConfigured):
        data["url"] = url_hint(event.url)  # a hook URL may carry the receiver's credential: auditors see its origin
    client_id = getattr(event, "client_id", None)
    return AuditEntry(position=position, project_id=tenant_of(event), type=type(event).__name__,
                      occurred_at=event.timestamp, actor_kind=kind, actor_id=ident, token_id=_token_id(event),
                      client_id=None if client_id is None else str(jsonable(client_id)), user_id=_user_id(event),
                      stream_id=as_uuid(event.originator_id) or UUID(int=0),
                      stream_version=int(event.originator_version),
                      data=data)


@dataclass(frozen=True, slots=True)
class Head:
    """A chain's last entry: its position, its hash and its ``reach`` (the latest ``occurred_at`` of the chain up to
    it, which never decreases along the chain; the ``since`` filter's index)."""

    hash: str
    reach: datetime
    position: int | None = None


def chained(entry: AuditEntry, previous: Head | None) -> Head:
    """The head of ``entry``'s chain once ``entry`` follows ``previous`` (None: the chain's first entry)."""
    if previous is None:
        return Head(hash=entry.hash_after(GENESIS), reach=entry.occurred_at, position=entry.position)
    return Head(hash=entry.hash_after(previous.hash), reach=max(previous.reach, entry.occurred_at),
                position=entry.position)


def fan_out(entry: AuditEntry, projects: Iterable[UUID]) -> list[AuditEntry]:
    """The entries of one event: its own (its project's, or the platform's), then, for a platform-level event that
    concerns a person (their dashboard tokens, their refused logins, their account), one in each project they are
    a member of when it happens: those are credentials that can act on the project, so its auditors see them."""
    if entry.project_id is not None or entry.user_id is None:
        return [entry]
    return [entry, *(entry.in_project(project) for project in sorted(projects))]


def membership_change(event: Any) -> tuple[UUID, UUID, bool] | None:
    """``(project, user, is_member)`` when ``event`` adds a member to a project or removes one."""
    if isinstance(event, Project.ProjectCreated):
        return UUID(str(event.originator_id)), UUID(str(event.owner_id)), True
    if isinstance(event, Project.MemberAdded | Project.MemberRemoved):
        return UUID(str(event.originator_id)), UUID(str(event.user_id)), isinstance(event, Project.MemberAdded)
    return None


@dataclass(slots=True)
class Memberships:
    """Who is a member of which project, as of the last event given: what ``fan_out`` needs.

    Attributes:
        of: each user's projects (for the users loaded, or every user when built from the whole store).
        changed: the final membership of each (project, user) pair changed since the last ``take_changes``.
    """

    of: dict[UUID, set[UUID]] = field(default_factory=dict)
    changed: dict[tuple[UUID, UUID], bool] = field(default_factory=dict)

    def entries(self, position: int, event: Any) -> list[AuditEntry]:
        """The event's entries, then the event's effect on memberships."""
        return self.expand(entry_of(position, event), event)

    def expand(self, entry: AuditEntry, event: Any) -> list[AuditEntry]:
        """``entry_of(event)``'s entries (``fan_out``), then the event's effect on memberships."""
        found = fan_out(entry, self.of.get(entry.user_id, ()) if entry.user_id else ())
        change = membership_change(event)
        if change is not None:
            project, user, member = change
            projects = self.of.setdefault(user, set())
            if member:
                projects.add(project)
            else:
                projects.discard(project)
            self.changed[(project, user)] = member
        return found

"""Ports: what the application needs from the outside world, as Protocols the composition root fills."""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from application.oauth.limits import AttemptBudget, AttemptKey


class Clock(Protocol):
    """Tells the time; tests inject a controllable one."""

    def now(self) -> datetime:
        """Returns the current UTC time."""
        ...


class PasswordHasher(Protocol):
    """argon2id hashing of passwords."""

    def hash(self, password: str) -> str:
        """Returns an encoded hash."""
        ...

    def verify(self, password_hash: str | None, password: str) -> bool:
        """Verifies in constant time; a None hash still spends the work and fails."""
        ...


class SecretHasher(Protocol):
    """Keyed hash of high-entropy opaque secrets."""

    def hash(self, secret: str) -> str:
        """Returns the keyed hash."""
        ...


class CredentialMinter(Protocol):
    """Makes and checks opaque credentials and public identifiers."""

    def client_secret(self) -> str:
        """Returns a new client secret."""
        ...

    def refresh_token(self) -> str:
        """Returns a new refresh token."""
        ...

    def client_id(self) -> str:
        """Returns a new public client id."""
        ...

    def is_client_secret(self, value: str) -> bool:
        """Whether ``value`` is a well-formed client secret."""
        ...

    def is_refresh_token(self, value: str) -> bool:
        """Whether ``value`` is a well-formed refresh token."""
        ...

    def is_client_id(self, value: str) -> bool:
        """Whether ``value`` has the shape of a public client id (registered or not)."""
        ...

    def hint(self, value: str) -> str:
        """Returns what may be shown of a credential later."""
        ...


@dataclass(frozen=True, slots=True)
class NewSigningKey:
    """A freshly generated signing key, its private part already encrypted for storage."""

    kid: str
    alg: str
    public_jwk: dict[str, str]
    encrypted_private_key: str


class KeyFactory(Protocol):
    """Generates signing keys and encrypts them at rest."""

    def generate(self, alg: str) -> NewSigningKey:
        """Returns a new key pair for ``alg``."""
        ...


class TokenSigner(Protocol):
    """Signs access tokens with the active key of the key ring."""

    def signed(self, claims: Mapping[str, Any]) -> tuple[str, int]:
        """Returns a compact JWS with ``typ: at+jwt`` and the active ``kid``, and the key ring's version at which
        that key was the active one."""
        ...

    def is_current(self, version: int) -> bool:
        """Whether the key ring is still at ``version``; if not, the next signature is made on the ring as it is."""
        ...


class Saver(Protocol):
    """Saves aggregates' pending events atomically; returns the last notification id (global position)."""

    def __call__(self, *aggregates: Any, guards: Sequence[tuple[Any, int]] = ()) -> int:
        """Saves ``aggregates`` in one transaction; refused as a conflict (eventsourcing's ``IntegrityError``) if a
        ``guards`` stream is no longer at its version."""
        ...


@dataclass(frozen=True, slots=True)
class FamilySelection:
    """A refresh family as the token lookup model had it when it held one of its tokens: that token's family and
    parent, and the ids of the family's active tokens."""

    family_id: Any
    parent_id: Any
    live: list[Any]


class FamilyReader(Protocol):
    """``TokenIndex.families_as_of`` and the streams a batch of logouts decides on, in one read
    (``projections.family_reads``)."""

    def read(self, token_ids: Sequence[Any]) -> tuple[dict[Any, "FamilySelection"], Sequence[Any]]:
        """The selections, and the stored events of the selected tokens and the presented tokens' parents."""
        ...


class TokenIndex(Protocol):
    """The token lookup read model, as commands that revoke and queries that validate need it."""

    def wait_for(self, position: int, timeout: float = 5.0) -> None:
        """Blocks until the model has applied every event up to ``position``."""
        ...

    def is_revoked(self, token_id: Any) -> bool:
        """Whether the token was revoked (or used up)."""
        ...

    def live_in_family(self, family_id: Any) -> list[Any]:
        """Ids of a refresh family's active tokens."""
        ...

    def families_as_of(self, token_ids: Sequence[Any]) -> dict[Any, "FamilySelection"]:
        """For each of ``token_ids`` the model holds as active (so every event up to its issuance) that belongs to a
        refresh family: its family, its parent and the family's active token ids, read in one query; the others
        (unknown to the model, used or ended) left out."""
        ...

    def live_matching(self, *, project_id: Any, client_id: str | None = None, user_id: Any = None,
                      token_id: Any = None, now: datetime) -> list[Any]:
        """Ids of a project's active tokens matching one filter."""
        ...

    def live_of_user(self, user_id: Any, *, now: datetime) -> list[Any]:
        """Ids of a person's active, unexpired tokens, whatever their project (dashboard logins have none)."""
        ...


class AccessTokenReader(Protocol):
    """Reads our own access tokens."""

    def claims(self, token: str, *, verify_exp: bool = True) -> dict[str, Any]:
        """Returns the verified claims, or raises ValueError for anything not a valid token of ours."""
        ...


class AttemptLimiter(Protocol):
    """Counts failed authentication attempts per key and locks a key that reached its limit (see
    ``application.oauth.limits``). Shared by every API process; an unavailable store raises
    ``TemporarilyUnavailable`` from ``reserve`` and ``budget`` (fail closed), never from ``release`` or ``settle``."""

    def reserve(self, keys: Sequence[AttemptKey]) -> int | None:
        """Atomically: if any key is locked, counts nothing and returns the seconds until its lock ends; otherwise
        counts one attempt against every key, as a failure unless it is released, and returns None."""
        ...

    def release(self, keys: Sequence[AttemptKey], *, reset: Sequence[AttemptKey] = ()) -> None:
        """A reserved attempt did not fail: uncounts it from ``keys`` and clears the counters of ``reset``."""
        ...

    def budget(self, keys: Iterable[AttemptKey]) -> AttemptBudget:
        """Reads the counters of ``keys`` in one round trip, for a batch of attempts decided together."""
        ...

    def settle(self, budget: AttemptBudget) -> None:
        """Writes a batch's failures and resets in one round trip; writes nothing when there are none."""
        ...

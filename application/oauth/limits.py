"""Abuse limits on authentication: failed attempts counted per account, per client and address, and per address.

The address keys count an IPv4 address or an IPv6 /64 (``source_network``); a client's key, the full address.

A key is ``(kind, value)``: an account (the normalised email, whether or not it is registered, so a refusal never
tells whether an account exists), a project client as seen from one source address (``client_keys``) or a source
address. Each kind has its own
limit of failures per window; the failure that reaches the limit locks the key for ``lockout`` seconds, and while
any of an attempt's keys is locked the attempt is refused before its credential is even looked at, so even the
right password or secret is refused until the lock ends.

The counters live behind the ``AttemptLimiter`` port (Redis in production, shared by every API process). Two ways
to use it:

* one attempt at a time (the password grant, and client authentication on the revocation and introspection
  endpoints): ``reserve`` counts the attempt atomically *before* the credential is verified, so N concurrent wrong
  guesses cannot all pass the check; ``release`` uncounts it when it succeeds;
* a batch (client_credentials, decided by the group committer in one thread): ``budget`` reads every key of the
  batch in one round trip, the batch spends it locally (exact within a process), and ``settle`` writes the batch's
  failures back in one round trip, only when there are any. Successful requests cost no write.
"""

import socket
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from application.oauth.errors import TooManyAttempts
from domain.ids import normalize_email

if TYPE_CHECKING:  # the port is declared with this module's key types: imported for annotations only
    from application.ports import AttemptLimiter

T = TypeVar("T")

ACCOUNT = "account"
CLIENT = "client"
ADDRESS = "address"
# Refusals recorded per source address (the audit ledger's TokenRequestRefused) that no other key counted: past the
# address limit they are still answered, no longer recorded, so one address cannot fill the ledger.
REFUSAL = "refusal"
# Sign-ups from one source address (network), successful or not: each hashes a password with argon2id and tells
# whether an e-mail is registered, so one address may try only so many per window.
SIGNUP = "signup"
# E-mails a caller named, adding a member, that no enabled user registered: anyone can sign up and own a project, so
# without a limit any account could test which e-mails are registered at line rate.
LOOKUP = "member lookup"

AttemptKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class AttemptLimits:
    """The abuse policy. Counts are failures per ``window`` seconds; ``lockout`` is in seconds.

    Attributes:
        per_account: failed password logins of one account (normalised email) before it is locked.
        per_client: failed authentications of one project client from one source address before that address is
            locked out of it (``client_keys``).
        per_address: failed authentications of any kind from one source address before it is refused; also how many
            other refusals (bad scope, grant or refresh token...) one address has recorded per window.
        per_signup: sign-up attempts from one source address (network), successful or not, before it is refused.
        per_lookup: e-mails one caller (a person or an API key) names adding members that no enabled user registered,
            before its member additions are refused (``lookup_keys``).
        window: seconds from a key's first counted failure during which its failures add up.
        lockout: seconds a key stays locked after the failure that reached its limit.
    """

    per_account: int = 10
    per_client: int = 10
    per_address: int = 50
    per_signup: int = 20
    per_lookup: int = 20
    window: int = 15 * 60
    lockout: int = 15 * 60

    def limit(self, key: AttemptKey) -> int:
        """The number of failures that locks ``key``."""
        kind = key[0]
        if kind == ACCOUNT:
            return self.per_account
        if kind == CLIENT:
            return self.per_client
        if kind == SIGNUP:
            return self.per_signup
        if kind == LOOKUP:
            return self.per_lookup
        return self.per_address


def limited_attempt(limiter: "AttemptLimiter", keys: Sequence["AttemptKey"], reset: "AttemptKey | None",
                    verify: Callable[[], T | None], *, refused: str | None = None) -> T | None:
    """Runs ``verify`` as one attempt counted against ``keys`` before it runs, so that concurrent attempts cannot
    all pass the limit check; refused with TooManyAttempts while a key is locked (``refused``: its description, if
    not the failed attempts' default).

    ``verify`` returns the authenticated party, or None for a failure (which stays counted). A success uncounts the
    attempt and clears ``reset``'s counter (None: clears nothing); an unexpected error uncounts it (no verdict).
    """
    wait = limiter.reserve(keys)
    if wait is not None:
        raise TooManyAttempts(wait) if refused is None else TooManyAttempts(wait, refused)
    try:
        result = verify()
    except BaseException:
        limiter.release(keys)
        raise
    if result is not None:
        limiter.release(keys, reset=() if reset is None else (reset,))
    return result


def account_keys(username: str, source: str | None) -> tuple[AttemptKey, ...]:
    """The keys a password login is counted against: the account, then the source address if known."""
    return ((ACCOUNT, normalize_email(username)), *_address(source))


def client_keys(client_id: str, source: str | None) -> tuple[AttemptKey, ...]:
    """The keys a client authentication is counted against: the client as seen from the source address, then the
    address's network (the client alone when the address is unknown).

    A ``client_id`` is no secret (every access token names it in its ``client_id`` claim): counted per client
    alone, ten bad requests from anywhere locked a project's API key out for its own integration too. What makes
    guessing a client secret hopeless is its 190 random bits; these keys bound how fast any one address tries at
    one client, and any one network (``source_network``) at all of them. The client's key is the full address, so
    a neighbour in a shared IPv6 /64 does not lock an integration out at the per-client limit (the /64 shares the
    address limit, as the hosts behind one IPv4 address do).
    """
    if not source:
        return ((CLIENT, client_id),)
    return ((CLIENT, f"{client_id} from {source_address(source)}"), (ADDRESS, source_network(source)))


def signup_keys(source: str | None) -> tuple[AttemptKey, ...]:
    """The key a sign-up is counted against: its source address's network (none when the address is unknown)."""
    return ((SIGNUP, source_network(source)),) if source else ()


def lookup_keys(actor: str) -> tuple[AttemptKey, ...]:
    """The key an unknown e-mail named adding a member is counted against: the caller (``user:<id>``,
    ``client:<client_id>``), whichever project it adds to."""
    return ((LOOKUP, actor),)


def _address(source: str | None) -> tuple[AttemptKey, ...]:
    return ((ADDRESS, source_network(source)),) if source else ()


_IPV4_MAPPED = bytes(10) + b"\xff\xff"


def source_network(source: str) -> str:
    """What the per-address limits count a source address as: an IPv4 address itself, an IPv6 address its /64.

    One IPv6 host is commonly given a whole /64 (RFC 4291 section 2.5.1 interface identifiers; RFC 8981 temporary
    addresses rotate within it), so counted per address, one attacker would have 2**64 fresh "addresses" for the
    per-address limits. A customer delegated a /56 or a /48 still has 256 or 65,536 of them: the account and client
    limits, which no address changes, are what bound guessing at one account or client. The audit records the full
    address; only the counters group. Spellings as for ``source_address``.
    """
    packed = _ipv6(source)
    if packed is None:
        return source
    if packed.startswith(_IPV4_MAPPED):
        return socket.inet_ntop(socket.AF_INET, packed[12:])
    return socket.inet_ntop(socket.AF_INET6, packed[:8] + bytes(8)) + "/64"


def source_address(source: str) -> str:
    """A source address in one spelling: an IPv6 address as ``inet_ntop`` writes it (``inet_pton`` reads case,
    leading zeros, ``::`` and an embedded dotted quad alike; a zone id is dropped), an IPv4-mapped one as its IPv4
    address; an IPv4 address, or a source that is no IP address (a test client's name), as it is."""
    packed = _ipv6(source)
    if packed is None:
        return source
    if packed.startswith(_IPV4_MAPPED):
        return socket.inet_ntop(socket.AF_INET, packed[12:])
    return socket.inet_ntop(socket.AF_INET6, packed)


def _ipv6(source: str) -> bytes | None:
    """The 16 bytes of an IPv6 address, or None for anything else (IPv4 is not parsed: the hot path)."""
    if ":" not in source:
        return None
    try:
        return socket.inet_pton(socket.AF_INET6, source.partition("%")[0])
    except OSError:
        return None


@dataclass(slots=True)
class AttemptBudget:
    """What a batch of attempts may still fail, read once for the whole batch and settled once.

    Attributes:
        limits: the policy the counts are measured against.
        counts: each key's failures in the store when the budget was read.
        waits: seconds until the lock ends, for keys that were locked when read.
        failures: failures spent by the batch, to be added to the store.
        resets: keys whose counter a success in the batch clears (applied before ``failures``).
    """

    limits: AttemptLimits
    counts: dict[AttemptKey, int] = field(default_factory=dict)
    waits: dict[AttemptKey, int] = field(default_factory=dict)
    failures: Counter[AttemptKey] = field(default_factory=Counter)
    resets: set[AttemptKey] = field(default_factory=set)

    def refusal(self, keys: Iterable[AttemptKey]) -> int | None:
        """Seconds to wait if any of ``keys`` has no failure left (locked before, or spent by this batch)."""
        waits = [self.waits.get(key) or self.limits.lockout for key in keys
                 if self.counts.get(key, 0) + self.failures[key] >= self.limits.limit(key)]
        return max(waits) if waits else None

    def fail(self, keys: Iterable[AttemptKey]) -> None:
        """Spends one failure of each key."""
        for key in keys:
            self.failures[key] += 1

    def succeed(self, key: AttemptKey) -> None:
        """Clears ``key``'s counter (a write at settle time only if it had failures)."""
        if self.counts.get(key) or self.failures[key]:
            self.resets.add(key)
        self.counts[key] = 0
        self.failures[key] = 0

    @property
    def dirty(self) -> bool:
        """Whether settling has anything to write."""
        return bool(self.resets) or any(self.failures.values())

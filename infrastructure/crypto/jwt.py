"""RFC 9068 JWT access tokens: signing with the active key and strict validation.

Validation refuses anything outside the allow-list (never ``none``, never HMAC: an HMAC "signed" with our public key
must not verify), an unknown ``kid``, an algorithm other than the key's own, a ``typ`` other than ``at+jwt``, and a
wrong iss, aud or an expired token. A kid we do not know triggers at most one key-ring reload per interval, so a key
published by another process is picked up without letting garbage kids hammer the database.
"""

import base64
import binascii
import json
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
import msgspec
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from infrastructure.crypto.keys import ALLOWED_ALGORITHMS

ACCESS_TOKEN_TYP = "at+jwt"  # noqa: S105 - a media type, not a secret
HEADER_MEMBERS = frozenset({"alg", "kid", "typ"})  # exactly what ``JwtSigner`` writes
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")  # RFC 7515 section 2: base64url with no padding
REQUIRED_CLAIMS = ("iss", "aud", "sub", "exp", "iat", "jti", "client_id")
# Seconds a token's ``iat`` or ``nbf`` may be ahead of this process's clock (RFC 7519 sections 4.1.5 and 4.1.6 allow
# a small leeway for skew). Every process keeps the database's time, each within half of its measurement's round
# trip (``infrastructure.clock.MAX_ROUND_TRIP`` at most), so two of them may differ by up to that round trip: without
# it, a token issued by one process in the first moments of a second (``iat`` is that second, rounded down) was
# refused as not yet valid by another a little behind, right after its issuance was answered. One second also covers
# a first measurement slower than that bound (adopted all the same). ``exp`` gets no such leeway.
MATURITY_LEEWAY = 1.0
_JWK_LOADERS = {"EC": ECAlgorithm.from_jwk, "OKP": OKPAlgorithm.from_jwk, "RSA": RSAAlgorithm.from_jwk}


class InvalidToken(ValueError):
    """The bearer token is not a valid access token (RFC 6750 section 3.1 ``invalid_token``)."""


@dataclass(frozen=True, slots=True)
class PublishedKey:
    """A verification key as published in the JWKS."""

    kid: str
    alg: str
    jwk: dict[str, str]
    public_key: Any


@dataclass(frozen=True, slots=True)
class KeySnapshot:
    """The key ring as one process sees it: what verifies, and what signs."""

    published: dict[str, PublishedKey]
    active_kid: str
    active_private_key: Any
    version: int = 0  # the key ring's version this snapshot was read at


class KeySet:
    """Holds the current key snapshot and keeps it in step with the key ring.

    With ``version`` (a cheap read of the ring's version), every validation first compares the ring's version with
    the snapshot's and reloads on a change: a key revoked by another process is refused by this one from the next
    request on, and a key it pre-published is known before it signs anything. Signing checks at most every
    ``sign_check_interval`` seconds, so issuance (the hot path) costs no query per token; a process may sign with
    a just-deactivated key for that long, which is harmless because that key stays published until its tokens
    expire. A just-revoked key (an emergency rotation) is not: its tokens would be refused from the moment they are
    answered. So every issuance is saved guarded by the ring's version its key was taken at (``JwtSigner.signed``)
    and, should the ring have moved, signed again on the ring as it is now (``is_current``).
    Without ``version`` (unit tests), an unknown kid triggers at most one reload per ``reload_interval``.
    """

    def __init__(self, loader: Callable[[], KeySnapshot], reload_interval: float = 5.0, *,
                 version: Callable[[], int] | None = None, sign_check_interval: float = 1.0) -> None:
        self._loader = loader
        self._version = version
        self._reload_interval = reload_interval
        self._sign_check_interval = sign_check_interval
        self._lock = threading.Lock()
        self._snapshot = loader()
        self._jwks_body: tuple[KeySnapshot, bytes] | None = None  # the JWK Set document of one snapshot, encoded
        self._loaded_at = self._checked_at = time.monotonic()

    @property
    def snapshot(self) -> KeySnapshot:
        """The current snapshot (no freshness check)."""
        return self._snapshot

    def for_signing(self) -> KeySnapshot:
        """The snapshot to sign with, checked against the ring at most every ``sign_check_interval`` seconds."""
        if self._version is not None and time.monotonic() - self._checked_at >= self._sign_check_interval:
            self.refresh()
        return self._snapshot

    def refresh(self) -> bool:
        """Reloads the snapshot if the ring's version moved since it was read; False if there is no version to
        check against (then ``find`` reloads on unknown kids instead)."""
        if self._version is None:
            return False
        current = self._version()
        self._checked_at = time.monotonic()
        if current != self._snapshot.version:
            self.reload()
        return True

    def is_current(self, version: int) -> bool:
        """Whether the key ring is still at ``version`` (one indexed read); if not, the snapshot is brought up to
        it, so what is signed next is signed on the ring as it is now. True without ``version`` to read."""
        if self._version is None:
            return True
        self.refresh()
        return self._snapshot.version == version

    def observe(self, version: int) -> bool:
        """Whether the snapshot is current for a ring ``version`` read elsewhere (same round trip as another
        query); a stale snapshot must be reloaded (``reload``, blocking) before keys are trusted."""
        return version == self._snapshot.version

    def reload(self) -> None:
        """Reloads the key ring from the event store."""
        with self._lock:
            self._snapshot = self._loader()
            self._loaded_at = self._checked_at = time.monotonic()

    def find(self, kid: str) -> PublishedKey | None:
        """Returns the published key ``kid`` as the ring has it now (see the class docstring)."""
        if self._version is not None:
            self.refresh()
            return self._snapshot.published.get(kid)
        key = self._snapshot.published.get(kid)
        if key is None and time.monotonic() - self._loaded_at > self._reload_interval:
            self.reload()
            key = self._snapshot.published.get(kid)
        return key

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """Returns the RFC 7517 JWK Set document (pre-published keys included, revoked and retired ones not)."""
        if self._version is not None:
            self.refresh()
        return jwk_set(self._snapshot)

    def jwks_json(self) -> bytes:
        """The current snapshot's JWK Set document as JSON, encoded once per snapshot; the caller has checked the
        snapshot against the ring (``observe``/``reload``), as ``jwks`` does itself."""
        snapshot, cached = self._snapshot, self._jwks_body
        if cached is None or cached[0] is not snapshot:
            cached = (snapshot, msgspec.json.encode(jwk_set(snapshot)))
            self._jwks_body = cached
        return cached[1]


def jwk_set(snapshot: KeySnapshot) -> dict[str, list[dict[str, str]]]:
    """RFC 7517 section 5: the JWK Set of a snapshot's published keys (pre-published included, revoked and retired
    ones not)."""
    return {"keys": [key.jwk for key in snapshot.published.values()]}


def published_key(kid: str, alg: str, jwk: dict[str, str]) -> PublishedKey:
    """Builds a PublishedKey from its stored public JWK."""
    return PublishedKey(kid=kid, alg=alg, jwk=jwk, public_key=_JWK_LOADERS[jwk["kty"]](dict(jwk)))


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _raw_signature(alg: str, private_key: Any, signing_input: bytes) -> bytes:
    """RFC 7518 section 3.4: ECDSA signatures are the raw R || S, not DER."""
    if alg == "ES256":
        r, s = decode_dss_signature(private_key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")
    if alg == "RS256":
        return bytes(private_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256()))
    return bytes(private_key.sign(signing_input))  # EdDSA (RFC 8037)


class JwtSigner:
    """Signs access tokens with the key set's active key.

    Token issuance is the hot path, so the JWS is assembled directly (RFC 7515 section 7.1 compact serialisation):
    the protected header is encoded once per key and the claims with msgspec. Validation, by contrast, goes through
    PyJWT's checks (signature, iss, aud, required claims) and ``JwtValidator``'s own time checks.
    """

    def __init__(self, keys: KeySet) -> None:
        self._keys = keys
        self._headers: dict[str, bytes] = {}

    def _header(self, kid: str, alg: str) -> bytes:
        header = self._headers.get(kid)
        if header is None:
            header = _b64(msgspec.json.encode({"alg": alg, "kid": kid, "typ": ACCESS_TOKEN_TYP}))
            self._headers[kid] = header
        return header

    def sign(self, claims: Mapping[str, Any]) -> str:
        """Returns a compact JWS of ``claims`` with ``typ: at+jwt`` and the active kid."""
        return self.signed(claims)[0]

    def signed(self, claims: Mapping[str, Any]) -> tuple[str, int]:
        """Returns a compact JWS of ``claims`` with ``typ: at+jwt`` and the active kid, and the key ring's version
        that key was active at: the token is good only if it is saved while the ring is still at that version."""
        snap = self._keys.for_signing()
        alg = snap.published[snap.active_kid].alg
        signing_input = self._header(snap.active_kid, alg) + b"." + _b64(msgspec.json.encode(claims))
        signature = _raw_signature(alg, snap.active_private_key, signing_input)
        return (signing_input + b"." + _b64(signature)).decode(), snap.version

    def is_current(self, version: int) -> bool:
        """Whether the key ring is still at ``version`` (``KeySet.is_current``: a stale snapshot is reloaded)."""
        return self._keys.is_current(version)


class UnknownKey(InvalidToken):
    """The token names a kid this process's key snapshot does not publish (it may be stale: check, then retry)."""


def unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header of a compact JWS (RFC 7515 section 7.1), decoded at least as strictly as PyJWT decodes it
    (base64url alphabet, canonical trailing bits, a JSON object; stricter: no padding, an ASCII token) but without
    decoding the rest of the token.

    It only picks the key and is checked for ``alg``, ``kid`` and ``typ``; PyJWT's own decode then parses the same
    bytes again and verifies the signature over them, so a header read differently here cannot get a token
    accepted. ``jwt.get_unverified_header`` did the same at the cost of decoding all three segments, character by
    character in Python, before the decode did it again: a third of a first-seen token's verification.

    Raises:
        InvalidToken: the token is not a compact JWS with such a header.
    """
    if not token.isascii():  # a compact JWS is ASCII; PyJWT would fail to encode a lone surrogate (a 500)
        raise InvalidToken("malformed token")
    segment, dot, _ = token.partition(".")
    if not dot or len(segment) % 4 == 1 or not _BASE64URL.fullmatch(segment):
        raise InvalidToken("malformed token")
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        header = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError) as exc:
        raise InvalidToken("malformed token") from exc
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != segment or not isinstance(header, dict):
        raise InvalidToken("malformed token")
    return header


def _seconds(claims: dict[str, Any], name: str) -> int:
    """The time claim ``name`` in whole seconds, as PyJWT reads it (``int()``), or InvalidToken if it is not a finite
    number: a NaN would compare false with every instant and so never expire."""
    value = claims[name]
    finite = isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))  # isfinite(10**400) raises
    if isinstance(value, bool) or not finite:
        raise InvalidToken(f"{name} is not a number")
    return int(value)


class JwtValidator:
    """Validates RFC 9068 access tokens strictly.

    A token verified once is remembered (by its exact string) with the key object that verified it: a client uses
    the same access token for many requests, and an ES256 verification costs more than the rest of a request's
    validation. A remembered token is accepted again only while that same key object is still published in the
    current key snapshot (any key-ring reload makes every entry miss and verify afresh) and its time claims still
    hold; everything else (signature, iss, aud, typ, kid, alg) cannot change for the same string and key.

    ``claims`` first brings the key snapshot up to the ring (one indexed read, see ``KeySet.refresh``), so a key
    revoked by another process is refused at once. ``peek`` does no I/O: callers on the event loop read the ring's
    version in the same round trip as their other query, and reload (``KeySet.observe``) before trusting a result.
    """

    def __init__(self, keys: KeySet, issuer: str, audience: str, leeway: int = 0, cache_size: int = 16_384, *,
                 clock: Callable[[], float] = time.time, maturity_leeway: float = MATURITY_LEEWAY) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway
        self._maturity_leeway = maturity_leeway
        self._clock = clock  # seconds since the epoch: the deployment's clock (``infrastructure.clock``)
        self._cache_size = cache_size
        self._verified: dict[str, tuple[dict[str, Any], PublishedKey]] = {}

    @property
    def keys(self) -> KeySet:
        """The key set tokens are checked against."""
        return self._keys

    def _key_for(self, token: str, find: Callable[[str], PublishedKey | None]) -> PublishedKey:
        header = unverified_header(token)
        if not header.keys() <= HEADER_MEMBERS:
            # RFC 7515 4.1.11: a ``crit`` extension we do not implement must be refused; and ``jku``, ``jwk``,
            # ``x5u``, ``x5c``, ``b64`` or anything else no token of ours carries are refused here too rather than
            # left to the library's version of the day to ignore or honour.
            raise InvalidToken("unexpected header member")
        alg, kid, typ = header.get("alg"), header.get("kid"), header.get("typ")
        if not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
            raise InvalidToken("algorithm not allowed")
        if not isinstance(typ, str) or typ.lower() not in (ACCESS_TOKEN_TYP, "application/" + ACCESS_TOKEN_TYP):
            raise InvalidToken("not an access token")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("missing kid")
        key = find(kid)
        if key is None or key.alg != alg:
            raise UnknownKey("unknown key")
        return key

    def validate(self, token: str) -> dict[str, Any]:
        """Returns the verified claims of ``token`` or raises InvalidToken."""
        return self.claims(token)

    def _remembered(self, token: str, verify_exp: bool,
                    find: Callable[[str], PublishedKey | None]) -> dict[str, Any] | None:
        """The claims of a token verified before, if its key is still the published one and it is still in time."""
        entry = self._verified.get(token)
        if entry is None:
            return None
        claims, key = entry
        if find(key.kid) is not key:
            return None
        if verify_exp and int(claims["exp"]) <= self._clock() - self._leeway:
            raise InvalidToken("ExpiredSignatureError")
        return claims

    def claims(self, token: str, *, verify_exp: bool = True) -> dict[str, Any]:
        """Returns the verified claims against the key ring as it is now (never to be modified: they may be shared
        by later calls); ``verify_exp=False`` only for revocation, where expiry does not matter."""
        if self._keys.refresh():
            return self._verified_claims(token, verify_exp=verify_exp, find=self._keys.snapshot.published.get)
        return self._verified_claims(token, verify_exp=verify_exp, find=self._keys.find)

    def peek(self, token: str) -> tuple[dict[str, Any], int]:
        """The verified claims against this process's current key snapshot, with no I/O, and that snapshot's ring
        version: a caller that reads the ring's version elsewhere trusts the claims only if the two are equal.

        Raises:
            UnknownKey: the snapshot does not publish the token's kid (refresh the key set, then try again).
            InvalidToken: anything else that is not a valid access token of ours.
        """
        snapshot = self._keys.snapshot  # one snapshot for the whole check, whatever other threads reload
        return self._verified_claims(token, verify_exp=True, find=snapshot.published.get), snapshot.version

    def _check_times(self, claims: dict[str, Any], *, verify_exp: bool) -> bool:
        """RFC 7519 4.1.4 to 4.1.6 as PyJWT checks them (whole seconds; ``exp`` passed by more than the leeway
        refuses, ``nbf`` or ``iat`` ahead by more than it and the maturity leeway too), but on ``clock``: PyJWT reads
        this host's clock, which may be minutes off the database's (``infrastructure.clock``), and would refuse a
        token another process issued a moment ago (see ``MATURITY_LEEWAY``). A time claim that is present must be a
        finite number (PyJWT's ``int()`` refused null, NaN and infinities too; strings and booleans, which it took,
        are refused here). With ``verify_exp=False`` (revocation, where time does not matter) an ``nbf`` or ``iat``
        ahead is not refused either: a token of ours issued by a host a moment ahead must still be revocable.

        Returns:
            Whether ``nbf`` and ``iat`` are not ahead by more than the leeways: only then may the claims be
            remembered, since a remembered token is checked for ``exp`` alone.

        Raises:
            InvalidToken: a malformed time claim, an expired token, or (``verify_exp``) one not yet valid.
        """
        times = {name: _seconds(claims, name) for name in ("exp", "iat", "nbf") if name in claims}
        now = self._clock()
        if verify_exp and times["exp"] <= now - self._leeway:
            raise InvalidToken("ExpiredSignatureError")
        mature = all(times[name] <= now + self._leeway + self._maturity_leeway for name in ("iat", "nbf")
                     if name in times)
        if verify_exp and not mature:
            raise InvalidToken("ImmatureSignatureError")
        return mature

    def names_published_key(self, token: str) -> bool:
        """Whether ``token``'s JOSE header is one of ours (an allowed ``alg``, ``typ`` ``at+jwt``, a ``kid`` this
        process's key snapshot publishes with that ``alg``), with no signature check and no I/O: a filter that keeps
        strings plainly not ours out of work that costs more (the batched revocation's stream read), never a check
        that lets anything in."""
        try:
            self._key_for(token, self._keys.snapshot.published.get)
        except InvalidToken:
            return False
        return True

    def _verified_claims(self, token: str, *, verify_exp: bool,
                         find: Callable[[str], PublishedKey | None]) -> dict[str, Any]:
        remembered = self._remembered(token, verify_exp, find)
        if remembered is not None:
            return remembered
        key = self._key_for(token, find)
        try:
            claims = jwt.decode(token, key.public_key, algorithms=[key.alg], audience=self._audience,
                                issuer=self._issuer,
                                options={"require": list(REQUIRED_CLAIMS), "verify_nbf": False, "verify_iat": False,
                                         "verify_exp": False})  # checked below, on the deployment's clock
        except jwt.PyJWTError as exc:
            raise InvalidToken(type(exc).__name__) from exc
        if not self._check_times(claims, verify_exp=verify_exp):
            return claims  # not yet valid (seen by revocation only): never remembered
        # Remembered for exp alone: nbf and iat have passed at this instant, and later instants only move further past.
        if len(self._verified) >= self._cache_size:
            self._verified.clear()
        self._verified[token] = (claims, key)
        return claims

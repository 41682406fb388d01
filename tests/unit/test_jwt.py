"""RFC 9068 access tokens: JwtSigner output, JwtValidator's refusals, KeySet reloads."""

import hashlib
import hmac
import json
import time
from types import SimpleNamespace
from typing import Any
from uuid import uuid4

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from infrastructure.clock import MAX_ROUND_TRIP
from infrastructure.crypto import jwt as jwt_module
from infrastructure.crypto.jwt import (
    MATURITY_LEEWAY,
    InvalidToken,
    JwtSigner,
    JwtValidator,
    KeySet,
    KeySnapshot,
    published_key,
)
from infrastructure.crypto.keys import SigningKeyFactory
from tests.unit.conftest import b64url, jwt_parts

ISSUER = "https://auth.example.test"
AUDIENCE = ISSUER + "/v1"
ALGS = ("ES256", "EdDSA", "RS256")


class Material:
    def __init__(self) -> None:
        factory = SigningKeyFactory(b"k" * 32)
        self.new = {alg: factory.generate(alg) for alg in ALGS}
        self.kid = {alg: key.kid for alg, key in self.new.items()}
        self.private = {alg: factory.decrypt(key.kid, key.encrypted_private_key) for alg, key in self.new.items()}
        self.published = {key.kid: published_key(key.kid, key.alg, key.public_jwk) for key in self.new.values()}

    def snapshot(self, active: str, published: tuple[str, ...] = ALGS) -> KeySnapshot:
        keys = {self.kid[alg]: self.published[self.kid[alg]] for alg in published}
        return KeySnapshot(published=keys, active_kid=self.kid[active], active_private_key=self.private[active])


@pytest.fixture(scope="module")
def material() -> Material:
    return Material()


@pytest.fixture
def validator(material: Material) -> JwtValidator:
    snapshot = material.snapshot("ES256")
    return JwtValidator(KeySet(lambda: snapshot, reload_interval=3600), ISSUER, AUDIENCE)


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": ISSUER, "aud": AUDIENCE, "sub": "klc_x", "client_id": "klc_x", "iat": now, "exp": now + 300,
            "jti": str(uuid4()), "scope": "project:read", "project_id": str(uuid4())}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def sign_raw(header: dict[str, Any], body: dict[str, Any], alg: str, private_key: Any) -> str:
    """A compact JWS with exactly ``header`` (PyJWT's encode would vet it), signed by PyJWT's algorithm."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(body).encode())}"
    signature = pyjwt.get_algorithm_by_name(alg).sign(signing_input.encode(), private_key)
    return f"{signing_input}.{b64url(signature)}"


def forge(material: Material, alg: str = "ES256", body: dict[str, Any] | None = None, **header: Any) -> str:
    """A token signed with one of our private keys; header members default to a genuine token's (None: omitted)."""
    headers = {"alg": alg, "kid": material.kid[alg], "typ": "at+jwt", **header}
    headers = {k: v for k, v in headers.items() if v is not None}
    return sign_raw(headers, body if body is not None else claims(), alg, material.private[alg])


@pytest.mark.parametrize("alg", ALGS)
def test_signed_token_validates_and_pyjwt_agrees(alg: str, material: Material) -> None:
    keys = KeySet(lambda: material.snapshot(alg))
    body = claims()
    token = JwtSigner(keys).sign(body)
    header, _ = jwt_parts(token)
    assert header == {"alg": alg, "kid": material.kid[alg], "typ": "at+jwt"}
    assert JwtValidator(keys, ISSUER, AUDIENCE).validate(token) == body
    public = material.private[alg].public_key()
    assert pyjwt.decode(token, public, algorithms=[alg], audience=AUDIENCE, issuer=ISSUER) == body


def test_a_genuine_forge_validates(validator: JwtValidator, material: Material) -> None:
    # The control for the refusals below: they fail for the one thing each one changes.
    for alg in ALGS:
        assert validator.validate(forge(material, alg))["iss"] == ISSUER
    assert validator.validate(forge(material, typ="application/at+jwt"))["aud"] == AUDIENCE
    assert validator.validate(forge(material, typ="AT+JWT"))["aud"] == AUDIENCE


def test_alg_none_is_refused(validator: JwtValidator, material: Material) -> None:
    header = {"alg": "none", "kid": material.kid["ES256"], "typ": "at+jwt"}
    token = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims()).encode())}."
    with pytest.raises(InvalidToken):
        validator.validate(token)


def test_hs256_signed_with_the_public_key_pem_is_refused(validator: JwtValidator, material: Material) -> None:
    pem = material.private["ES256"].public_key().public_bytes(serialization.Encoding.PEM,
                                                              serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "kid": material.kid["ES256"], "typ": "at+jwt"}
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims()).encode())}"
    signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    with pytest.raises(InvalidToken):
        validator.validate(f"{signing_input}.{b64url(signature)}")


@pytest.mark.parametrize("typ", ["JWT", "jwt", "at+jwt+x", "", None, 1])
def test_wrong_or_missing_typ_is_refused(typ: Any, validator: JwtValidator, material: Material) -> None:
    token = forge(material, typ=typ)
    assert jwt_parts(token)[0].get("typ") == typ
    with pytest.raises(InvalidToken):
        validator.validate(token)


@pytest.mark.parametrize("kid", [None, "", "unknown-kid", 42])
def test_missing_or_unknown_kid_is_refused(kid: Any, validator: JwtValidator, material: Material) -> None:
    with pytest.raises(InvalidToken):
        validator.validate(forge(material, kid=kid))


@pytest.mark.parametrize("member", [{"crit": ["exp"], "exp": 1}, {"crit": ["b64"], "b64": True},
                                    {"jku": "https://attacker.example/jwks"}, {"x5u": "https://attacker.example/c"},
                                    {"jwk": {"kty": "oct", "k": "AA"}}, {"cty": "JWT"}, {"zip": "DEF"}, {"nonce": "1"}])
def test_header_members_no_token_of_ours_carries_are_refused(member: dict[str, Any], validator: JwtValidator,
                                                              material: Material) -> None:
    """Signed by our own key, so only the extra member can be why it is refused (RFC 7515 4.1.11 for ``crit``)."""
    with pytest.raises(InvalidToken, match="unexpected header member"):
        validator.validate(forge(material, **member))


def test_header_alg_must_be_the_keys_own(validator: JwtValidator, material: Material) -> None:
    # RS256 by the RSA private key, but naming the ES256 key's kid.
    with pytest.raises(InvalidToken):
        validator.validate(forge(material, "RS256", kid=material.kid["ES256"]))
    with pytest.raises(InvalidToken):
        validator.validate(forge(material, "EdDSA", kid=material.kid["RS256"]))


def test_signature_by_another_key_of_the_same_alg_is_refused(validator: JwtValidator, material: Material) -> None:
    header = {"alg": "ES256", "kid": material.kid["ES256"], "typ": "at+jwt"}
    token = sign_raw(header, claims(), "ES256", ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(InvalidToken):
        validator.validate(token)


@pytest.mark.parametrize(
    "changes",
    [{"iss": "https://evil.example"}, {"iss": ISSUER + "/"}, {"aud": ISSUER}, {"aud": "https://other.example/v1"},
     {"exp": int(time.time()) - 10}, {"nbf": int(time.time()) + 600}, {"iat": int(time.time()) + 600},
     {"jti": None}, {"client_id": None}, {"sub": None}, {"exp": None}, {"iat": None}, {"iss": None}, {"aud": None}],
    ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()),
)
def test_bad_claims_are_refused(changes: dict[str, Any], validator: JwtValidator, material: Material) -> None:
    with pytest.raises(InvalidToken):
        validator.validate(forge(material, body=claims(**changes)))


def test_tampered_payload_or_signature_is_refused(validator: JwtValidator, material: Material) -> None:
    token = JwtSigner(KeySet(lambda: material.snapshot("ES256"))).sign(claims())
    header, payload, signature = token.split(".")
    forged_claims = {**jwt_parts(token)[1], "scope": "project:read project:write audit:read"}
    with pytest.raises(InvalidToken):
        validator.validate(f"{header}.{b64url(json.dumps(forged_claims).encode())}.{signature}")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    with pytest.raises(InvalidToken):
        validator.validate(f"{header}.{payload}.{flipped}")


def loosely_encoded(header: str) -> str:
    """``header`` (a canonical base64url segment of 3n+1 bytes) with trailing bits set: it decodes to the same bytes."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return header[:-1] + alphabet[alphabet.index(header[-1]) + 1]


@pytest.mark.parametrize("loosen", [lambda h: h + "=", lambda h: h + "==", loosely_encoded, lambda h: h[:-1] + "+",
                                    lambda h: "\u00e9" + h, lambda h: b64url(b"[1, 2]"), lambda h: b64url(b'"at+jwt"')],
                         ids=["padding", "double padding", "trailing bits", "base64 not base64url", "non-ASCII",
                              "an array", "a string"])
def test_a_signed_token_whose_header_is_loosely_encoded_is_refused(loosen: Any, validator: JwtValidator,
                                                                   material: Material) -> None:
    """The header that picks the key and is checked for alg and typ is read as strictly as PyJWT reads it: each
    of these, signed as it is by our own key, is refused."""
    header = {"alg": "ES256", "kid": material.kid["ES256"], "typ": "at+jwt", "x": ""}
    while len(json.dumps(header)) % 3 != 1:
        header["x"] += "x"
    segment = loosen(b64url(json.dumps(header).encode()))
    signing_input = f"{segment}.{b64url(json.dumps(claims()).encode())}"
    signature = pyjwt.get_algorithm_by_name("ES256").sign(signing_input.encode(), material.private["ES256"])
    with pytest.raises(InvalidToken):
        validator.validate(f"{signing_input}.{b64url(signature)}")
    with pytest.raises(InvalidToken):
        jwt_module.unverified_header(f"{signing_input}.{b64url(signature)}")


def test_a_token_that_is_not_ascii_is_refused(validator: JwtValidator, material: Material) -> None:
    header, payload, signature = forge(material).split(".")
    for token in (f"{header}.{payload}\ud800.{signature}", f"{header}.{payload}\u00e9.{signature}"):
        with pytest.raises(InvalidToken):  # a lone surrogate cannot even be encoded: never a 500
            validator.validate(token)


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "...", "eyJhbGciOiJFUzI1NiJ9..", "\u00e9.\u00e9.\u00e9"])
def test_garbage_is_refused(garbage: str, validator: JwtValidator) -> None:
    with pytest.raises(InvalidToken):
        validator.validate(garbage)


def test_jwks_publishes_only_public_keys(material: Material) -> None:
    document = KeySet(lambda: material.snapshot("ES256")).jwks()
    assert {key["kid"] for key in document["keys"]} == set(material.kid.values())
    assert all(not {"d", "p", "q"} & set(key) for key in document["keys"])


def test_the_encoded_jwks_follows_the_snapshot(material: Material) -> None:
    snapshots = iter([material.snapshot("ES256"), material.snapshot("EdDSA", published=("EdDSA",))])
    keys = KeySet(lambda: next(snapshots))
    first = keys.jwks_json()
    assert json.loads(first) == keys.jwks() and keys.jwks_json() is first  # encoded once per snapshot
    keys.reload()
    assert [key["kid"] for key in json.loads(keys.jwks_json())["keys"]] == [material.kid["EdDSA"]]


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_unknown_kid_reloads_only_after_the_interval(material: Material, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeMonotonic()
    monkeypatch.setattr(jwt_module, "time", SimpleNamespace(monotonic=clock))
    calls: list[int] = []

    def loader() -> KeySnapshot:
        calls.append(1)
        # The EdDSA key is published by "another process" after the first load.
        return material.snapshot("ES256", ("ES256",) if len(calls) == 1 else ("ES256", "EdDSA"))

    keys = KeySet(loader, reload_interval=5.0)
    validator = JwtValidator(keys, ISSUER, AUDIENCE)
    new_token = forge(material, "EdDSA")
    assert len(calls) == 1
    with pytest.raises(InvalidToken):
        validator.validate(new_token)
    clock.now += 4.9
    assert keys.find("garbage-kid") is None
    assert keys.find(material.kid["EdDSA"]) is None
    assert len(calls) == 1
    assert keys.find(material.kid["ES256"]) is not None  # a known kid never reloads
    clock.now += 0.2
    assert validator.validate(new_token)["iss"] == ISSUER
    assert len(calls) == 2
    for _ in range(3):
        assert keys.find("garbage-kid") is None
    assert len(calls) == 2
    clock.now += 5.1
    assert keys.find("garbage-kid") is None
    assert len(calls) == 3


def test_signer_follows_the_active_key_after_a_reload(material: Material) -> None:
    snapshots = iter([material.snapshot("ES256"), material.snapshot("EdDSA")])
    keys = KeySet(lambda: next(snapshots))
    signer, validator = JwtSigner(keys), JwtValidator(keys, ISSUER, AUDIENCE)
    first = signer.sign(claims())
    keys.reload()
    second = signer.sign(claims())
    assert jwt_parts(first)[0]["kid"] == material.kid["ES256"]
    assert jwt_parts(second)[0] == {"alg": "EdDSA", "kid": material.kid["EdDSA"], "typ": "at+jwt"}
    assert validator.validate(first)["iss"] == validator.validate(second)["iss"] == ISSUER


@pytest.mark.parametrize("alg", [["ES256"], {"ES256": 1}])
def test_an_unhashable_alg_is_refused_as_invalid_token(alg: Any, validator: JwtValidator, material: Material) -> None:
    # Anything else than InvalidToken escapes the bearer-token check and becomes a 500.
    header = {"alg": alg, "kid": material.kid["ES256"], "typ": "at+jwt"}
    token = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims()).encode())}.AAAA"
    with pytest.raises(InvalidToken):
        validator.validate(token)


@pytest.mark.parametrize("body", [[1, 2], "claims", {"exp": "soon"}, {"iss": [ISSUER]}, {"aud": 7}, {"iat": "x"},
                                  {"exp": str(int(time.time()) + 300)}, {"nbf": "0"}, {"iat": True},
                                  {"exp": float("nan")}, {"exp": float("inf")}, {"nbf": float("-inf")},
                                  {"nbf": 10**400}])
def test_oddly_typed_but_signed_payloads_are_refused(body: Any, validator: JwtValidator, material: Material) -> None:
    payload = body if not isinstance(body, dict) else claims(**body)
    with pytest.raises(InvalidToken):
        validator.validate(forge(material, body=payload))


def test_a_verified_token_is_remembered_not_verified_again(material: Material, validator: JwtValidator,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    token = forge(material)
    first = validator.validate(token)
    monkeypatch.setattr(jwt_module.jwt, "decode", lambda *a, **k: pytest.fail("verified twice"))
    assert validator.validate(token) is first


def test_a_remembered_token_is_refused_once_its_key_is_withdrawn(material: Material) -> None:
    snapshots = iter([material.snapshot("ES256"), material.snapshot("EdDSA", ("EdDSA",))])
    keys = KeySet(lambda: next(snapshots), reload_interval=3600)
    validator = JwtValidator(keys, ISSUER, AUDIENCE)
    token = forge(material)
    validator.validate(token)
    keys.reload()  # the ES256 key is no longer published (revoked or retired)
    with pytest.raises(InvalidToken):
        validator.validate(token)


def test_a_remembered_token_is_refused_once_it_expires(material: Material) -> None:
    now = time.time()
    clock = [now]
    validator = JwtValidator(KeySet(lambda: material.snapshot("ES256"), reload_interval=3600), ISSUER, AUDIENCE,
                             clock=lambda: clock[0])
    token = forge(material, body=claims(exp=int(now) + 60))
    validator.validate(token)
    clock[0] = now + 61
    with pytest.raises(InvalidToken):
        validator.validate(token)
    assert validator.claims(token, verify_exp=False)["exp"] == int(now) + 60  # revocation still reads it


def test_names_published_key_filters_by_the_header_alone(validator: JwtValidator, material: Material) -> None:
    """The revocation lane's cheap filter: a header of ours passes even with a signature that does not verify (the
    batch's hash check decides); any other header does not, and nothing raises."""
    genuine = forge(material)
    assert validator.names_published_key(genuine)
    assert validator.names_published_key(genuine[:-4] + "AAAA")  # no signature check: not a validation
    for header in ({"kid": "unknown-kid"}, {"typ": "JWT"}, {"typ": None}, {"kid": None}):
        assert not validator.names_published_key(forge(material, **header))
    assert not validator.names_published_key(forge(material, "RS256", kid=material.kid["ES256"]))  # not its alg
    none = f"{b64url(json.dumps({'alg': 'none', 'kid': material.kid['ES256'], 'typ': 'at+jwt'}).encode())}.e30."
    for garbage in (none, "", "a.b.c", "not a token", genuine + "\ud800"):
        assert not validator.names_published_key(garbage)


def test_a_null_time_claim_is_refused(validator: JwtValidator, material: Material) -> None:
    with pytest.raises(InvalidToken):
        validator.validate(forge(material, body={**claims(), "nbf": None}))


@pytest.mark.parametrize(("skew", "changes", "valid"), [
    (-600, {"iat": -700, "exp": -360}, True),  # expired by the host's clock only
    (-600, {}, False),  # issued in the clock's future
    (-600, {"iat": -700, "nbf": -300, "exp": 300}, False),  # not yet valid by the clock
    (+600, {}, False),  # expired by the clock
])
def test_times_are_judged_on_the_validators_clock_not_the_hosts(skew: int, changes: dict[str, int], valid: bool,
                                                               material: Material) -> None:
    """The deployment keeps time by the database's clock (``infrastructure.clock``): exp, nbf and iat are judged on
    the clock the validator is given, whatever this host's own clock says (``changes``: seconds from now)."""
    validator = JwtValidator(KeySet(lambda: material.snapshot("ES256"), reload_interval=3600), ISSUER, AUDIENCE,
                             clock=lambda: time.time() + skew)
    now = int(time.time())
    token = forge(material, body=claims(**{name: now + delta for name, delta in changes.items()}))
    if valid:
        assert validator.validate(token)["jti"]
    else:
        with pytest.raises(InvalidToken):
            validator.validate(token)


def test_a_token_not_yet_valid_can_still_be_revoked_but_is_not_remembered(material: Material) -> None:
    """Revocation (``verify_exp=False``) takes a token whose iat is a moment ahead (issued by a host a moment ahead):
    it must stay revocable. Its claims are not remembered, so validation still refuses it."""
    now = time.time()
    validator = JwtValidator(KeySet(lambda: material.snapshot("ES256"), reload_interval=3600), ISSUER, AUDIENCE,
                             clock=lambda: now)
    token = forge(material, body=claims(iat=int(now) + 5))
    assert validator.claims(token, verify_exp=False)["iat"] == int(now) + 5
    with pytest.raises(InvalidToken, match="ImmatureSignatureError"):
        validator.validate(token)


def test_a_token_issued_a_moment_ago_by_a_process_ahead_is_valid_at_once(material: Material) -> None:
    """Two processes' readings of the database's clock may differ by up to a measurement's round trip
    (``infrastructure.clock``). A token issued in the first moments of a second carries that second as its ``iat``
    (rounded down): a process that far behind must still take it the instant its issuance is answered, and remember
    it."""
    second = int(time.time())
    issuer_now = second + 0.1  # the issuing process's reading: iat is ``second``
    behind = [issuer_now - MAX_ROUND_TRIP]  # the validating process's reading at the same instant
    validator = JwtValidator(KeySet(lambda: material.snapshot("ES256"), reload_interval=3600), ISSUER, AUDIENCE,
                             clock=lambda: behind[0])
    token = forge(material, body=claims(iat=int(issuer_now), exp=second + 300))
    assert validator.validate(token)["iat"] == second
    assert validator.validate(token)["iat"] == second  # remembered: a later instant is only further past its iat
    behind[0] = second + 301
    with pytest.raises(InvalidToken, match="ExpiredSignatureError"):  # exp gets no leeway
        validator.validate(token)


def test_the_maturity_leeway_covers_the_clocks_measurement_error() -> None:
    """Each process's time is within half of its measurement's round trip, so two differ by at most one."""
    assert MATURITY_LEEWAY >= MAX_ROUND_TRIP


def test_a_token_ahead_by_more_than_the_maturity_leeway_is_refused(material: Material) -> None:
    now = time.time()
    validator = JwtValidator(KeySet(lambda: material.snapshot("ES256"), reload_interval=3600), ISSUER, AUDIENCE,
                             clock=lambda: now)
    for name in ("iat", "nbf"):
        token = forge(material, body=claims(**{name: int(now + MATURITY_LEEWAY) + 1}))
        with pytest.raises(InvalidToken, match="ImmatureSignatureError"):
            validator.validate(token)

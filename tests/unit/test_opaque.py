"""Opaque credentials: prefix, base62 body, CRC32 checksum; malformed strings refused without a look-up."""

import re

import pytest

from infrastructure.adapters import OpaqueCredentials
from infrastructure.crypto.opaque import (
    BODY_LENGTH,
    CredentialType,
    _checksum,
    hint,
    is_well_formed,
    mint,
    new_client_id,
)

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SHAPES = {CredentialType.CLIENT_SECRET: r"klcs_[0-9A-Za-z]{38}", CredentialType.REFRESH_TOKEN: r"klrt_[0-9A-Za-z]{38}"}
# A fixed, valid sample: it also pins the checksum format (base62 CRC32 of "klcs_<body>"), so secrets already
# handed out keep validating.
SAMPLE = "klcs_q4GQ7wZ3b0mXkT1sLhV9cRnD2yPfJ8aE2eauF8"


@pytest.mark.parametrize("kind", list(CredentialType))
def test_minted_credentials_are_well_formed(kind: CredentialType) -> None:
    value = mint(kind)
    assert re.fullmatch(SHAPES[kind], value)
    assert is_well_formed(value, kind)


def test_kinds_are_not_interchangeable() -> None:
    assert not is_well_formed(mint(CredentialType.REFRESH_TOKEN), CredentialType.CLIENT_SECRET)
    assert not is_well_formed(mint(CredentialType.CLIENT_SECRET), CredentialType.REFRESH_TOKEN)


def test_the_sample_is_well_formed() -> None:
    assert is_well_formed(SAMPLE, CredentialType.CLIENT_SECRET)


def test_every_single_character_substitution_is_rejected() -> None:
    accepted = []
    for position, original in enumerate(SAMPLE):
        for replacement in ALPHABET + "_-+/=. é\x00":
            if replacement == original:
                continue
            forged = SAMPLE[:position] + replacement + SAMPLE[position + 1:]
            if is_well_formed(forged, CredentialType.CLIENT_SECRET):
                accepted.append(forged)
    assert accepted == []


@pytest.mark.parametrize("letter", ["\u0663", "\u00e9", "\uff21", "\u00b2"])  # Arabic-Indic 3, é, fullwidth A, ²
def test_a_body_of_other_scripts_letters_or_digits_is_rejected_even_with_its_checksum(letter: str) -> None:
    body = letter * BODY_LENGTH
    forged = f"klrt_{body}{_checksum('klrt', body)}"  # right length, right checksum, not base62
    assert not is_well_formed(forged, CredentialType.REFRESH_TOKEN)


def test_every_adjacent_transposition_is_rejected() -> None:
    for position in range(len(SAMPLE) - 1):
        a, b = SAMPLE[position], SAMPLE[position + 1]
        if a != b:
            forged = SAMPLE[:position] + b + a + SAMPLE[position + 2:]
            assert not is_well_formed(forged, CredentialType.CLIENT_SECRET), forged


@pytest.mark.parametrize(
    "value",
    [
        "klrt_" + SAMPLE[5:],  # another type's prefix
        "KLCS_" + SAMPLE[5:],  # prefixes are case-sensitive
        "klcs-" + SAMPLE[5:],
        SAMPLE[5:],  # no prefix
        SAMPLE[:-1],  # too short
        SAMPLE + "0",  # too long
        SAMPLE[:10] + SAMPLE[11:] + "A",  # a character lost, length made up
        "klcs_" + "!" * 38,
        "klcs_" + "٣" * 38,  # non-ASCII digits are not base62
        SAMPLE[:20] + "-" + SAMPLE[21:],
        "",
    ],
)
def test_malformed_credentials_are_rejected(value: str) -> None:
    assert not is_well_formed(value, CredentialType.CLIENT_SECRET)


def test_hint_shows_prefix_and_last_four_only() -> None:
    value = mint(CredentialType.CLIENT_SECRET)
    shown = hint(value)
    assert shown == "klcs_..." + value[-4:]
    assert value[5:-4] not in shown
    assert hint(SAMPLE) == "klcs_...auF8"


def test_two_mints_differ() -> None:
    values = {mint(CredentialType.CLIENT_SECRET) for _ in range(50)}
    assert len(values) == 50
    assert len({mint(CredentialType.REFRESH_TOKEN) for _ in range(50)}) == 50


def test_every_position_draws_from_the_whole_alphabet() -> None:
    # One random number spans the whole body: a range too small would leave the leading positions at "0".
    bodies = [mint(CredentialType.REFRESH_TOKEN)[5:-6] for _ in range(1500)]
    ids = [new_client_id()[4:] for _ in range(1500)]
    for values, width in ((bodies, 32), (ids, 22)):
        for position in range(width):
            assert len({value[position] for value in values}) == 62, position


def test_client_ids_are_public_and_distinct() -> None:
    ids = {new_client_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(re.fullmatch(r"klc_[0-9A-Za-z]{22}", i) for i in ids)


def test_the_adapter_uses_the_formats() -> None:
    creds = OpaqueCredentials()
    secret, refresh = creds.client_secret(), creds.refresh_token()
    assert creds.is_client_secret(secret) and not creds.is_client_secret(refresh)
    assert creds.is_refresh_token(refresh) and not creds.is_refresh_token(secret)
    assert creds.hint(refresh) == "klrt_..." + refresh[-4:]
    assert creds.client_id().startswith("klc_")
    assert not creds.is_client_secret(SAMPLE[:-1] + ("A" if SAMPLE[-1] != "A" else "B"))

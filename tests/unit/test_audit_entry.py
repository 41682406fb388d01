"""Ledger entries from events on the in-memory store: columns, data without secrets, a hash chain that any change,
removal or insertion breaks, and the copies of a person's platform-level events in their projects."""

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from uuid import UUID, uuid4

import pytest

from application.accounts import SignedUp
from application.oauth.errors import InvalidGrant
from application.oauth.grants import TokenRequest
from domain.project import Project
from domain.token import Token
from projections.audit_entry import (
    GENESIS,
    PLATFORM_CHAIN,
    AuditEntry,
    Memberships,
    api_time,
    entry_of,
    fan_out,
    is_secret_field,
    jsonable,
)
from tests.unit.conftest import PASSWORD, World, build_world


@pytest.fixture
def world() -> Iterator[World]:
    built = build_world()
    yield built
    built.app.close()


@pytest.fixture
def ada(world: World) -> SignedUp:
    return world.sign_up("ada@example.test")


def ledger(world: World) -> list[AuditEntry]:
    memberships = Memberships()
    return [entry for n in world.app.recorder.select_notifications(start=1, limit=10**6)
            for entry in memberships.entries(n.id, world.app.mapper.to_domain_event(n))]


@pytest.mark.parametrize(("name", "secret"), [
    ("secret_hash", True), ("password_hash", True), ("encrypted_private_key", True), ("client_secret", True),
    ("webhook_signing_secret", True), ("refresh_token", True), ("value_hash", True), ("secret_hint", False),
    ("secret_expires_at", False), ("previous_secret_expires_at", False), ("scope", False), ("kid", False),
])
def test_secret_fields_are_recognised_by_name(name: str, secret: bool) -> None:
    assert is_secret_field(name) is secret


def test_values_become_json_that_jsonb_keeps() -> None:
    value = {"a\x00": "b\x00", "nested": {"secret": "x", "n": 1}, "ids": (uuid4(),), "set": frozenset({"b", "a"})}
    out = jsonable(value)
    assert out["a\x00"] == "b\ufffd" and out["nested"] == {"n": 1} and isinstance(out["ids"][0], str)
    assert out["set"] == ["a", "b"]


def test_a_signup_and_a_client_token_become_entries_without_secrets(world: World, ada: SignedUp) -> None:
    world.tokens.handle(TokenRequest(grant_type="client_credentials", client_id=ada.client.client.client_id,
                                     client_secret=ada.client.client_secret))
    entries = ledger(world)
    by_type = {e.type: e for e in entries}
    assert by_type["UserRegistered"].user_id == ada.user.id and by_type["UserRegistered"].project_id is None
    assert by_type["ProjectCreated"].project_id == ada.project.id
    assert by_type["ProjectCreated"].user_id == ada.user.id  # the owner
    created = by_type["ClientCreated"]
    assert created.client_id == ada.client.client.client_id and "secret_hash" not in created.data
    issued = by_type["TokenIssued"]
    assert (issued.actor_kind, issued.actor_id) == ("client", ada.client.client.client_id)
    assert issued.token_id is not None and issued.data["grant_type"] == "client_credentials"
    text = repr([e.data for e in entries])
    assert ada.client.client_secret not in text and "argon2" not in text and "private" not in text
    assert [e.position for e in entries] == sorted(e.position for e in entries)


def test_the_chain_breaks_at_any_change_removal_or_insertion(world: World, ada: SignedUp) -> None:
    entries = [e for e in ledger(world) if e.project_id == ada.project.id]
    hashes: list[str] = []
    for entry in entries:
        hashes.append(entry.hash_after(hashes[-1] if hashes else GENESIS))
    changed = replace(entries[0], actor_id="someone-else")
    assert changed.hash_after(GENESIS) != hashes[0]
    assert entries[1].hash_after(GENESIS) != hashes[1]  # the first one removed
    inserted = replace(entries[0], position=entries[0].position + 1)
    assert entries[1].hash_after(inserted.hash_after(hashes[0])) != hashes[1]
    assert entries[0].canonical() == replace(entries[0], data=dict(reversed(entries[0].data.items()))).canonical()


def test_a_members_dashboard_tokens_are_copied_into_each_of_their_projects(world: World, ada: SignedUp) -> None:
    login = world.tokens.handle(TokenRequest(grant_type="password", client_id="dashboard",
                                             username="ada@example.test", password=PASSWORD))
    entries = ledger(world)
    access = login.aggregates[0].id
    copies = [e for e in entries if e.token_id == access]
    assert [e.chain for e in copies] == [PLATFORM_CHAIN, ada.project.id]
    assert copies[0].position == copies[1].position and copies[0].data == copies[1].data
    assert world.app.load(access, Token).value_hash == world.secrets.hash(login.access_token)
    assert "value_hash" not in copies[0].data and world.secrets.hash(login.access_token) not in repr(entries)


def test_a_copy_in_a_project_hashes_as_an_entry_made_for_that_project(world: World, ada: SignedUp) -> None:
    """A copy reuses its entry's canonical content (made once per event): it must read as the entry of that project,
    and a change of the entry must never hash as its cached content."""
    world.tokens.handle(TokenRequest(grant_type="password", client_id="dashboard", username="ada@example.test",
                                     password=PASSWORD))
    platform, copy = [e for e in ledger(world) if e.type == "TokenIssued" and e.user_id == ada.user.id][:2]
    assert (platform.chain, copy.chain) == (PLATFORM_CHAIN, ada.project.id)
    assert platform.content is not None  # made for the copy
    made_afresh = replace(platform, project_id=ada.project.id)
    assert copy == made_afresh and copy.canonical_bytes() == made_afresh.canonical_bytes()
    assert copy.hash_after(GENESIS) == made_afresh.hash_after(GENESIS) != platform.hash_after(GENESIS)
    assert b'"project_id":null' in platform.canonical_bytes()
    assert replace(platform, actor_id="someone-else").hash_after(GENESIS) != platform.hash_after(GENESIS)


def test_a_copy_leaves_out_where_the_person_was(world: World, ada: SignedUp) -> None:
    """A refused login on a member's account is copied into each of their projects without ``source`` and
    ``user_agent`` (anyone who knows the e-mail can add them to a project); the platform's entry keeps both."""
    with pytest.raises(InvalidGrant):
        world.tokens.handle(TokenRequest(grant_type="password", client_id="dashboard", username="ada@example.test",
                                         password=PASSWORD + "-wrong", source="198.51.100.9", user_agent="probe/1"))
    platform, copy = [e for e in ledger(world) if e.type == "TokenRequestRefused"]
    assert (platform.chain, copy.chain) == (PLATFORM_CHAIN, ada.project.id)
    assert (platform.data["source"], platform.data["user_agent"]) == ("198.51.100.9", "probe/1")
    assert copy.data == {k: v for k, v in platform.data.items() if k not in ("source", "user_agent")}
    assert b"198.51.100.9" not in copy.canonical_bytes() and b"probe/1" not in copy.canonical_bytes()
    made_afresh = replace(platform, project_id=ada.project.id, data=copy.data)
    assert copy.hash_after(GENESIS) == made_afresh.hash_after(GENESIS)
    assert platform.data["source"] == "198.51.100.9"  # the copy did not strip the platform's own entry


def test_membership_follows_the_project_events() -> None:
    project, user = uuid4(), uuid4()
    memberships = Memberships()
    base = AuditEntry(position=1, project_id=None, type="TokenIssued", occurred_at=ts(), actor_kind="user",
                      actor_id=str(user), token_id=uuid4(), client_id="dashboard", user_id=user, stream_id=uuid4(),
                      stream_version=1, data={})
    assert memberships.expand(base, object()) == [base]
    memberships.of[user] = {project}
    assert [e.chain for e in fan_out(base, memberships.of[user])] == [PLATFORM_CHAIN, project]
    assert fan_out(replace(base, user_id=None), {project}) == [replace(base, user_id=None)]


def ts() -> datetime:
    return datetime(2026, 1, 1, tzinfo=UTC)


def test_an_entry_without_a_project_is_on_the_platform_chain() -> None:
    entry = AuditEntry(position=1, project_id=None, type="X", occurred_at=ts(), actor_kind="system", actor_id=None,
                       token_id=None, client_id=None, user_id=None, stream_id=UUID(int=1), stream_version=1, data={})
    assert entry.chain == PLATFORM_CHAIN


def test_api_times_always_carry_six_digits_of_microseconds() -> None:
    # PostgreSQL's to_char(..., 'US') in the exports does the same: a page and an export agree on every entry.
    assert api_time(datetime(2026, 1, 1, 1, 2, 3, 640000, tzinfo=UTC)) == "2026-01-01T01:02:03.640000+00:00"
    assert api_time(datetime(2026, 1, 1, 1, 2, 3, tzinfo=UTC)) == "2026-01-01T01:02:03.000000+00:00"


def test_a_webhooks_url_enters_the_ledger_as_its_origin_only() -> None:
    """A hook URL may carry the receiver's credential in its path or query: auditors see where, not how."""
    project = Project(project_id=uuid4(), name="Acme", owner_id=uuid4(), actor="system")
    project.configure_webhook(webhook_id=uuid4(), url="https://hooks.slack.com/services/T0/B0/s3cr3tpath?x=y",
                              event_types=["member.added"], encrypted_secret="enc", secret_hint="whsec_...abcd",
                              actor="system")
    configured = project.collect_events()[-1]
    entry = entry_of(2, configured)
    assert entry.data["url"] == "https://hooks.slack.com/..."
    assert b"s3cr3tpath" not in entry.canonical_bytes() and "enc" not in entry.data.values()

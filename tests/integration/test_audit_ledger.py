"""The audit ledger on real PostgreSQL: one entry per stored event with exactly-once tracking, per-project hash
chains, a rebuild that reproduces the live table exactly (hashes included), row-level security, and
``keyledger audit verify`` finding altered, deleted and inserted entries."""

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.sql import SQL

from application.oauth.errors import InvalidClient, InvalidGrant
from application.oauth.grants import TokenRequest
from domain.ids import DASHBOARD_CLIENT_ID
from domain.refusal import Refusal
from infrastructure.bootstrap import Container, Endpoints, build
from infrastructure.settings import Settings
from projections.audit_entry import GENESIS, PLATFORM_CHAIN
from projections.audit_query import AuditQuery
from projections.audit_verify import recorded, row_entry, verify
from projections.base import TENANT_ROLE
from projections.rebuild import COMMITTED, RETRYING, RebuildProgress
from tests.conftest import SECRET_KEY, fresh_database
from tests.integration.support import PASSWORD, SignedUp, head, sign_up

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ledger(server_url: str, redis_url: str, settings: Settings) -> Iterator[tuple[Container, str]]:
    """A container on a database of its own, projections running, with a varied history."""
    with fresh_database(server_url) as url:
        built = build(settings, Endpoints(database_url=url, redis_url=redis_url), migrate=True)
        built.start_projections()
        try:
            populate(built)
            built.audit.wait_for(head(built))
            yield built, url
        finally:
            built.close()


def handle(container: Container, **fields: Any) -> Any:
    return container.tokens.handle(TokenRequest(source="192.0.2.7", user_agent="pytest-audit/1.0", **fields))


def populate(container: Container) -> None:
    alice, bob = sign_up(container, project="A"), sign_up(container, project="B")
    for account in (alice, bob):
        handle(container, grant_type="client_credentials", client_id=account.client.client.client_id,
               client_secret=account.client.client_secret)
    login = handle(container, grant_type="password", client_id=DASHBOARD_CLIENT_ID, username=alice.user.email,
                   password=PASSWORD)
    rotated = handle(container, grant_type="refresh_token", client_id=DASHBOARD_CLIENT_ID,
                     refresh_token=login.refresh_token)
    assert rotated.refresh_token
    with pytest.raises(InvalidGrant):  # reuse: the family is revoked
        handle(container, grant_type="refresh_token", client_id=DASHBOARD_CLIENT_ID, refresh_token=login.refresh_token)
    with pytest.raises(InvalidClient):
        handle(container, grant_type="client_credentials", client_id=alice.client.client.client_id,
               client_secret=container.tokens.minter.client_secret())
    with pytest.raises(InvalidGrant):
        handle(container, grant_type="password", client_id=DASHBOARD_CLIENT_ID, username=alice.user.email,
               password="wrong " + PASSWORD)


def table(url: str) -> list[dict[str, Any]]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute("SELECT * FROM audit ORDER BY position, chain").fetchall()


def test_every_stored_event_has_its_entry_and_members_see_their_dashboard_tokens(
        ledger: tuple[Container, str]) -> None:
    container, url = ledger
    rows = table(url)
    store = container.app.recorder.select_notifications(start=1, limit=10**6, stop=container.audit.position())
    by_position: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        by_position.setdefault(row["position"], []).append(row)
    assert list(by_position) == [n.id for n in store]
    for entries in by_position.values():
        own, *copies = entries
        assert own["chain"] == (own["project_id"] or PLATFORM_CHAIN)
        # Copies only of platform-level events about a person, one per project they belong to.
        assert not copies or (own["project_id"] is None and own["user_id"] is not None)
        assert all(c["chain"] == c["project_id"] and c["user_id"] == own["user_id"] for c in copies)
    login = [e for e in by_position.values() if e[0]["type"] == "TokenIssued" and e[0]["client_id"] == "dashboard"]
    assert login and all(len(entries) == 2 for entries in login)  # the platform's and project A's
    assert {"TokenIssued", "TokenRefreshed", "TokenRevoked", "RefreshTokenReuseDetected", "TokenRequestRefused",
            "ProjectCreated", "ClientCreated", "UserRegistered"} <= {r["type"] for r in rows}


def test_each_chain_links_each_entry_to_the_previous_one_of_its_project(ledger: tuple[Container, str]) -> None:
    _, url = ledger
    heads: dict[UUID, str] = {}
    for row in table(url):
        entry = row_entry(row)
        assert row["hash"] == entry.hash_after(heads.get(entry.chain, GENESIS))
        heads[entry.chain] = row["hash"]
    assert len(heads) == 3  # two projects and the platform
    assert PLATFORM_CHAIN in heads


def test_refusals_name_reason_client_project_source_and_agent_but_no_secret(ledger: tuple[Container, str]) -> None:
    _, url = ledger
    refusals = [r for r in table(url) if r["type"] == "TokenRequestRefused"]
    reasons = {r["data"]["reason"]: r for r in refusals}
    assert {"client_secret_wrong", "password_wrong", "refresh_token_reused"} <= set(reasons)
    wrong_secret = reasons["client_secret_wrong"]
    assert wrong_secret["project_id"] is not None and wrong_secret["client_id"]
    assert wrong_secret["data"]["source"] == "192.0.2.7"
    assert wrong_secret["data"]["user_agent"] == "pytest-audit/1.0"
    logins = [r for r in refusals if r["data"]["reason"] == "password_wrong"]
    # A dashboard login is platform-level, and a copy goes to each project of the person: theirs to audit.
    assert [r["project_id"] is None for r in logins] == [True, False]
    platform, copy = logins
    assert platform["user_id"] is not None and platform["data"]["source"] == "192.0.2.7"
    assert platform["data"]["user_agent"] == "pytest-audit/1.0"
    # Where the person was stays on the platform's entry: anyone who knows their e-mail can add them to a project.
    assert copy["data"] == {k: v for k, v in platform["data"].items() if k not in ("source", "user_agent")}
    assert reasons["refresh_token_reused"]["token_id"] is not None
    dump = json.dumps([r["data"] for r in table(url)])
    assert not re.search(r"kl(cs|rt)_[A-Za-z0-9]{8}", dump)  # hints ("klcs_...abcd") only, never a secret
    assert "argon2" not in dump and PASSWORD not in dump


def test_token_events_after_issuance_are_filed_under_their_client_and_user(ledger: tuple[Container, str]) -> None:
    _, url = ledger
    rows = table(url)
    revoked = [r for r in rows if r["type"] == "TokenRevoked"]
    assert revoked and all(r["client_id"] == DASHBOARD_CLIENT_ID and r["user_id"] for r in revoked)
    assert len({r["data"]["revocation_id"] for r in revoked}) == 1  # one family revocation, one command
    refreshed = next(r for r in rows if r["type"] == "TokenRefreshed")
    children = {refreshed["data"]["refresh_id"], refreshed["data"]["access_id"]}
    issued = {str(r["token_id"]): r for r in rows if r["type"] == "TokenIssued"}
    assert {issued[c]["data"]["parent_id"] for c in children} == {str(refreshed["token_id"])}


def test_a_rebuild_reproduces_the_live_table_exactly(ledger: tuple[Container, str], redis_url: str) -> None:
    container, url = ledger
    container.audit.wait_for(head(container))
    live = table(url)
    rebuilt = cli(url, redis_url, "projections", "rebuild", "audit")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert f"audit: rebuilt up to position {head(container)}" in rebuilt.stdout
    assert "replayed up to position" in rebuilt.stderr  # the progress display
    assert table(url) == live  # every column, hashes included
    with psycopg.connect(url, row_factory=dict_row) as conn:
        chains = conn.execute("SELECT count(*) AS n FROM audit_chain").fetchone()
    assert chains == {"n": 3}


def test_the_tenant_role_sees_only_its_projects_entries(ledger: tuple[Container, str]) -> None:
    container, url = ledger
    projects = {r["project_id"] for r in table(url)} - {None}
    one = next(iter(projects))
    rows = container.audit.tenant_select(one, SQL("SELECT project_id FROM {}").format(container.audit.table("audit")),
                                         ())
    assert rows and {r["project_id"] for r in rows} == {one}
    with psycopg.connect(url) as conn:
        conn.execute(f"SET ROLE {TENANT_ROLE}")
        assert conn.execute("SELECT count(*) FROM audit").fetchone() == (0,)  # no project set: nothing


def test_verify_passes_on_an_intact_ledger(ledger: tuple[Container, str]) -> None:
    container, url = ledger
    report = verify(container.app.recorder, container.app.mapper, container.audit)
    assert report.ok, report.problems
    assert (report.checked, report.up_to) == (len(table(url)), container.audit.position())


def test_verify_reads_the_table_it_found_while_a_rebuild_swaps_in_another(ledger: tuple[Container, str]) -> None:
    """``audit verify`` reads the position and the entries in one snapshot. A rebuild swapping its table in between
    would show it a table whose rows that snapshot cannot see: the whole ledger reported missing. The table is held
    from the start instead, so the swap waits for the read."""
    container, url = ledger
    container.audit.wait_for(head(container))
    entries = len(table(url))
    rows = recorded(container.audit, None)
    assert next(rows) == container.audit.position()
    tried = threading.Event()  # the rebuild tried to swap: it retries (the table held) or has committed (not held)

    def note(step: RebuildProgress) -> None:
        if step.phase in (RETRYING, COMMITTED):
            tried.set()

    rebuilding = threading.Thread(target=container.runner("audit").rebuild, args=(note,))
    rebuilding.start()
    assert tried.wait(60)
    read = list(rows)
    rebuilding.join(60)
    assert not rebuilding.is_alive()
    assert len(read) == entries
    assert verify(container.app.recorder, container.app.mapper, container.audit).ok


def cli(url: str, redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KEYLEDGER_DATABASE_URL": url, "KEYLEDGER_REDIS_URL": redis_url,
           "KEYLEDGER_SECRET_KEY": SECRET_KEY}
    return subprocess.run([sys.executable, "-m", "infrastructure.cli", *args], env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def test_verify_reports_altered_missing_and_extra_entries(server_url: str, redis_url: str,
                                                          settings: Settings) -> None:
    with fresh_database(server_url) as url:
        built = build(settings, Endpoints(database_url=url, redis_url=redis_url), migrate=True)
        try:
            account: SignedUp = sign_up(built, project="T")
            for _ in range(3):
                handle(built, grant_type="client_credentials", client_id=account.client.client.client_id,
                       client_secret=account.client.client_secret)
            built.runner("audit").catch_up()
        finally:
            built.close()
        intact = cli(url, redis_url, "audit", "verify", "--project", str(account.project.id))
        assert intact.returncode == 0, intact.stdout + intact.stderr
        assert "OK" in intact.stdout and "position" in intact.stderr  # the progress display
        positions = [r["position"] for r in table(url) if r["project_id"] == account.project.id]
        altered, deleted = positions[-1], positions[-2]
        with psycopg.connect(url) as conn:
            conn.execute("UPDATE audit SET actor_id = 'someone-else' WHERE position = %s", (altered,))
            conn.execute("DELETE FROM audit WHERE position = %s", (deleted,))
            conn.execute("INSERT INTO audit SELECT position + 1000000, chain, project_id, type, occurred_at, "
                         "actor_kind, actor_id, token_id, client_id, user_id, stream_id, stream_version, data, hash, "
                         "reach FROM audit WHERE position = %s", (positions[0],))
        tampered = cli(url, redis_url, "audit", "verify")
        assert tampered.returncode == 1
        assert f"altered position {altered}:" in tampered.stdout
        assert f"missing position {deleted}:" in tampered.stdout
        assert f"extra position {positions[0] + 1000000}:" in tampered.stdout
        assert "1 missing, 1 extra, 1 altered" in tampered.stdout
        # The tampering is all in the project's chain: the platform's own chain, verified alone, is intact.
        platform_only = cli(url, redis_url, "audit", "verify", "--project", "platform")
        platform_entries = sum(1 for r in table(url) if r["project_id"] is None)
        assert platform_entries > 0
        assert platform_only.returncode == 0, platform_only.stdout
        assert f"OK: {platform_entries} entries" in platform_only.stdout


def test_export_writes_a_projects_entries_as_ndjson_and_csv(ledger: tuple[Container, str], redis_url: str) -> None:
    _, url = ledger
    rows = table(url)
    project = next(r["project_id"] for r in rows if r["project_id"] is not None)
    ndjson = cli(url, redis_url, "audit", "export", "--project", str(project))
    assert ndjson.returncode == 0, ndjson.stderr
    lines = [json.loads(line) for line in ndjson.stdout.splitlines()]
    assert [e["position"] for e in lines] == [r["position"] for r in rows if r["project_id"] == project]
    assert all(e["hash"] for e in lines)
    csv = cli(url, redis_url, "audit", "export", "--project", "platform", "--format", "csv")
    assert csv.returncode == 0, csv.stderr
    assert csv.stdout.splitlines()[0].startswith("position,type,occurred_at")
    assert len(csv.stdout.splitlines()) == 1 + sum(1 for r in rows if r["project_id"] is None)


def test_since_finds_entries_whose_time_runs_behind_their_position(server_url: str, redis_url: str,
                                                                   settings: Settings) -> None:
    """An event is timestamped when decided and positioned when committed: a later position can carry an earlier
    time. ``since`` must still find it (the ``reach`` index only says where to start)."""
    base = datetime(2026, 1, 1, tzinfo=UTC)
    project = UUID(int=7)
    minutes = [10, 30, 20, 40, 5]
    events = []
    for position, minute in enumerate(minutes, start=1):
        refusal = Refusal(refusal_id=UUID(int=position), project_id=project, grant_type="client_credentials",
                          client_id="klc_x", user_id=None, token_id=None, reason="client_secret_wrong",
                          error="invalid_client", source=None, user_agent=None, actor="system")
        (event,) = refusal.collect_events()
        object.__setattr__(event, "timestamp", base + timedelta(minutes=minute))
        events.append((position, event))
    with fresh_database(server_url) as url:
        built = build(settings, Endpoints(database_url=url, redis_url=redis_url), migrate=True)
        try:
            built.audit.apply_batch(events, len(events))
            for since in (0, 15, 25, 35, 45):
                at = base + timedelta(minutes=since)
                found = [r["position"] for r in built.audit.page(AuditQuery(project_id=project, since=at, limit=50))]
                assert found == [p for p, m in enumerate(minutes, start=1) if m >= since], since
            window = built.audit.page(AuditQuery(project_id=project, since=base + timedelta(minutes=15),
                                                 until=base + timedelta(minutes=35), limit=50))
            assert [r["position"] for r in window] == [2, 3]
        finally:
            built.close()

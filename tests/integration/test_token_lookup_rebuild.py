"""Invariant 3 for the token lookup model: ``keyledger projections rebuild token_lookup`` replays the event store
into exactly the table the live projection built, and ``keyledger projections status`` reports position and lag.

The history is varied (client tokens, logins, rotations, reuse detection, revocations of every kind) and longer
than one projection batch, so the rebuild reports progress more than once. The CLI runs as a real subprocess on
the same database, after this process's projection runners are stopped.
"""

import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from application.oauth.errors import InvalidGrant
from application.oauth.grants import TokenRequest
from application.oauth.revocation import RevocationRequest
from domain.client import DASHBOARD
from domain.ids import DASHBOARD_CLIENT_ID
from infrastructure.bootstrap import Container, Endpoints, build
from infrastructure.settings import Settings
from projections.rebuild import COMMITTED, LOCKING, PREPARING, SWAPPING
from tests.conftest import (
    SECRET_KEY,
    bearer,
    client_login,
    fresh_database,
    revoke_token,
    signup,
    start_server,
    stop_server,
    wait_until_up,
)
from tests.integration.support import PASSWORD, SignedUp, head, sign_up

pytestmark = pytest.mark.integration

BATCH = 500  # ProjectionRunner's default batch size: the history must be longer to show progress twice


@pytest.fixture(scope="module")
def live(server_url: str, redis_url: str, settings: Settings) -> Iterator[tuple[Container, str, str]]:
    """A container on a database of its own with its projections running; its URL and Redis URL for the CLI."""
    with fresh_database(server_url) as url:
        built = build(settings, Endpoints(database_url=url, redis_url=redis_url), migrate=True)
        built.start_projections()
        try:
            yield built, url, redis_url
        finally:
            built.close()


def issue(container: Container, **fields: Any) -> Any:
    return container.tokens.handle(TokenRequest(**fields))


def login(container: Container, account: SignedUp) -> Any:
    return issue(container, grant_type="password", client_id=DASHBOARD_CLIENT_ID, username=account.user.email,
                 password=PASSWORD)


def refresh(container: Container, refresh_token: str) -> Any:
    return issue(container, grant_type="refresh_token", client_id=DASHBOARD_CLIENT_ID, refresh_token=refresh_token)


def client_token(container: Container, account: SignedUp) -> str:
    return str(issue(container, grant_type="client_credentials", client_id=account.client.client.client_id,
                     client_secret=account.client.client_secret).access_token)


def populate(container: Container) -> None:
    """Every event the model reads, in every combination its UPDATEs distinguish."""
    alice, bob = sign_up(container, project="A"), sign_up(container, project="B")
    futures = [container.committer.submit_request(TokenRequest(
        grant_type="client_credentials", client_id=account.client.client.client_id,
        client_secret=account.client.client_secret)) for account in (alice, bob) for _ in range(BATCH // 2 + 20)]
    for future in futures:
        future.result(timeout=30)
    alice_client = container.tokens.authenticate_client(TokenRequest(
        grant_type="", client_id=alice.client.client.client_id, client_secret=alice.client.client_secret))
    container.revocation.handle(alice_client, RevocationRequest(token=client_token(container, alice),
                                                                token_type_hint=None))
    # A family rotated twice, then its first refresh token reused: reuse detection revokes the family.
    reused = login(container, alice)
    child = refresh(container, reused.refresh_token)
    refresh(container, child.refresh_token)
    with pytest.raises(InvalidGrant):
        refresh(container, reused.refresh_token)
    # A family rotated once, then revoked through its newest refresh token.
    revoked = refresh(container, login(container, bob).refresh_token)
    container.revocation.handle(DASHBOARD, RevocationRequest(token=revoked.refresh_token, token_type_hint=None))
    # A lone dashboard access token revoked; a family left alive, with a used parent.
    container.revocation.handle(DASHBOARD, RevocationRequest(token=login(container, bob).access_token,
                                                             token_type_hint="access_token"))
    refresh(container, login(container, alice).refresh_token)


def table(url: str) -> list[tuple[Any, ...]]:
    """The hot table's rows, then the expired table's (a row's table is part of the state a rebuild must match)."""
    with psycopg.connect(url) as conn:
        return [*conn.execute("SELECT 'hot', * FROM token_lookup ORDER BY token_id").fetchall(),
                *conn.execute("SELECT 'expired', * FROM token_expired ORDER BY token_id").fetchall()]


def cli(url: str, redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Runs ``keyledger projections ...`` in a subprocess against ``url``."""
    env = {**os.environ, "KEYLEDGER_DATABASE_URL": url, "KEYLEDGER_REDIS_URL": redis_url,
           "KEYLEDGER_SECRET_KEY": SECRET_KEY}
    return subprocess.run([sys.executable, "-m", "infrastructure.cli", "projections", *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def status(url: str, redis_url: str) -> dict[str, tuple[int, int]]:
    """``projections status`` as {name: (position, lag)}."""
    done = cli(url, redis_url, "status")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].split() == ["projection", "position", "lag"]
    rows = {}
    for line in lines[1:]:
        if not line.strip():
            break  # the webhook outbox's lag follows the table
        name, position, lag = line.split()
        rows[name] = (int(position), int(lag))
    return rows


def test_cli_rebuild_gives_the_same_table_and_status_shows_the_lag(live: tuple[Container, str, str]) -> None:
    """Snapshot, stop the live runners, add non-token events (lag), damage the table, rebuild with the CLI:
    the table equals the snapshot, progress was shown per batch, status reports the new position with no lag."""
    container, url, redis_url = live
    populate(container)
    built_at = head(container)
    for view in container.views.values():
        view.wait_for(built_at, timeout=30)
    for runner in container.runners:
        runner.stop()
    snapshot = table(url)
    statuses = {(row[3], row[12]) for row in snapshot}
    assert {("access", "active"), ("access", "revoked"), ("refresh", "used"), ("refresh", "revoked"),
            ("refresh", "active")} <= statuses, statuses
    assert {"refreshed", "refresh token reuse detected", "revoked by client"} <= {row[14] for row in snapshot}
    names = set(container.views)
    assert {"members", "token_lookup"} <= names
    assert status(url, redis_url) == dict.fromkeys(names, (built_at, 0))

    sign_up(container, project="After")  # events the token model skips, yet its position must cover them
    now_at = head(container)
    lagging = dict.fromkeys(names, (built_at, now_at - built_at))
    assert status(url, redis_url) == lagging
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE token_lookup SET status = 'active', ended_reason = NULL WHERE status = 'revoked'")
        conn.execute(sql.SQL("DELETE FROM token_lookup WHERE token_id = %s"), (snapshot[0][1],))
    assert table(url) != snapshot

    done = cli(url, redis_url, "rebuild", "token_lookup")
    assert done.returncode == 0, done.stderr
    progress = [int(n) for n in re.findall(r"token_lookup: replayed up to position (\d+) of", done.stderr)]
    assert len(progress) >= 2 and progress == sorted(progress) and progress[-1] == now_at, done.stderr
    percents = [int(p) for p in re.findall(r"\((\d+)%\)", done.stderr)]
    assert max(percents) <= 100 and percents[-1] == 100, done.stderr  # of the head the replay last read
    phases = [line.removeprefix("token_lookup: ") for line in done.stderr.replace("\r", "\n").splitlines()
              if line.startswith("token_lookup: ") and "replayed up to" not in line]
    assert phases == [PREPARING, LOCKING, SWAPPING, COMMITTED], done.stderr  # no silent phase
    assert f"token_lookup: rebuilt up to position {now_at}" in done.stdout

    assert table(url) == snapshot
    assert status(url, redis_url) == {**lagging, "token_lookup": (now_at, 0)}
    # Exactly-once: a runner started after the rebuild has nothing left to apply.
    assert container.runner("token_lookup").run_once() == 0
    assert table(url) == snapshot


def test_cli_rebuild_of_an_unknown_projection_fails_clearly(live: tuple[Container, str, str]) -> None:
    """A misspelt name changes nothing and exits 2, naming the known projections."""
    _, url, redis_url = live
    before = table(url)
    done = cli(url, redis_url, "rebuild", "token_lokup")
    assert done.returncode == 2
    assert "unknown projection 'token_lokup'" in done.stderr and "token_lookup" in done.stderr
    assert table(url) == before


def test_cli_rebuild_gives_up_with_exit_1_while_a_reader_holds_the_table(live: tuple[Container, str, str]) -> None:
    """A reader holding ``token_lookup`` through the rebuild's one attempt (``--attempts 1``): exit status 1, "try
    again later", the live table as it was and no rebuild schema left; with the reader gone, one attempt swaps."""
    _, url, redis_url = live
    before = table(url)
    with psycopg.connect(url) as reader:
        reader.execute("SELECT count(*) FROM token_lookup")  # held until this transaction ends
        done = cli(url, redis_url, "rebuild", "token_lookup", "--attempts", "1")
    assert done.returncode == 1, done.stderr
    assert "stayed in use by other transactions through 1 attempt(s)" in done.stderr
    assert "try again later" in done.stderr and "rebuilt up to" not in done.stdout
    assert table(url) == before
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'kl_rebuild_%'").fetchall() == []
    again = cli(url, redis_url, "rebuild", "token_lookup", "--attempts", "1")
    assert again.returncode == 0, again.stderr
    assert table(url) == before


@pytest.fixture(scope="module")
def served(server_url: str, redis_url: str, settings: Settings) -> Iterator[tuple[Container, str, str]]:
    """A running ``keyledger serve`` and, on its database, an in-process container whose projections do not run
    (it only writes history quickly through the group committer)."""
    with fresh_database(server_url) as url:
        env = {"KEYLEDGER_DATABASE_URL": url, "KEYLEDGER_REDIS_URL": redis_url, "KEYLEDGER_SECRET_KEY": SECRET_KEY,
               "KEYLEDGER_ISSUER": settings.issuer}
        proc, base = start_server(env)
        try:
            wait_until_up(base, proc)
            built = build(settings, Endpoints(database_url=url, redis_url=redis_url), migrate=False)
            try:
                yield built, url, base
            finally:
                built.close()
        finally:
            stop_server(proc)


def test_a_revoked_token_stays_refused_while_the_cli_rebuilds(served: tuple[Container, str, str],
                                                               redis_url: str) -> None:
    """Invariant 1 holds during a rebuild: while ``projections rebuild token_lookup`` replays a long history on the
    database of a running API, a revoked (unexpired) access token is never accepted.

    The history is long (thousands of token events before the revocation) so that the replay takes a while; the
    token is used over and over, from another thread, for the whole rebuild.
    """
    container, url, base = served
    with httpx.Client(base_url=base, timeout=30) as http:
        account = signup(http)
        requests = [TokenRequest(grant_type="client_credentials", client_id=account["client"]["client_id"],
                                 client_secret=account["client"]["client_secret"]) for _ in range(6000)]
        for future in [container.committer.submit_request(request) for request in requests]:
            future.result(timeout=60)
        victim = client_login(http, account).json()["access_token"]
        assert revoke_token(http, victim, account).status_code == 200
        path = f"/v1/projects/{account['project']['id']}"
        assert http.get(path, headers=bearer(victim)).status_code == 401

        answers: list[int] = []
        stop = threading.Event()

        def use_the_revoked_token() -> None:
            with httpx.Client(base_url=base, timeout=30) as own:
                while not stop.is_set():
                    answers.append(own.get(path, headers=bearer(victim)).status_code)

        user = threading.Thread(target=use_the_revoked_token)
        user.start()
        try:
            done = cli(url, redis_url, "rebuild", "token_lookup")
        finally:
            stop.set()
            user.join(timeout=30)
    assert answers, "the revoked token was never presented during the rebuild"
    problems = []
    if done.returncode != 0:
        problems.append(f"the rebuild exited {done.returncode} racing the server's own token_lookup runner: "
                        + done.stderr.strip().splitlines()[-1])
    if (accepted := answers.count(200)) > 0:
        problems.append(f"a revoked access token was accepted {accepted} times out of {len(answers)} during the "
                        "rebuild: ReadModel.reset() commits an empty table and TokenLookupView.is_revoked() treats a "
                        "missing row as live")
    assert not problems, "\n".join(problems)

"""Logins for the ``logout`` scenario, minted in this process from the server's own configuration (``--seed-logins``).

A password grant costs about 30 ms of the machine (argon2id), so a ``logout`` run sized for 3,500 revocations a
second (43,750 logins for 10 s) spends ten minutes logging in over HTTP. Seeded, the same logins take seconds, and an
A/B pair of runs becomes affordable. Only the password check is skipped: each login is what the password grant
issues (``TokenEndpoint.login_tokens``: the same mint, ids, lifetimes and keyed hashes), saved with the grant's guards
(the key ring's and the account's versions), ``BATCH`` logins per transaction. What the scenario then measures, the
revocation, is unchanged.

It needs the server's database, Redis and secret key in this process's environment (``KEYLEDGER_DATABASE_URL``,
``KEYLEDGER_REDIS_URL``, ``KEYLEDGER_SECRET_KEY`` and the issuer and audience settings the server runs with): a
local server its operator runs, never a remote one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from benchmarks.fixtures import SetupError

if TYPE_CHECKING:
    from infrastructure.bootstrap import Container

BATCH = 500  # logins (1,000 tokens) per transaction
REQUIRED = ("KEYLEDGER_DATABASE_URL", "KEYLEDGER_REDIS_URL", "KEYLEDGER_SECRET_KEY")


def seed_logins(emails: Sequence[str], *, progress: TextIO, label: str) -> list[str]:
    """One login per entry of ``emails`` (an account may repeat: each entry starts a family); their refresh tokens.

    Raises:
        SetupError: The environment lacks the server's settings, or an email is no account's.
    """
    missing = [name for name in REQUIRED if not os.environ.get(name)]
    if missing:
        raise SetupError(f"--seed-logins needs the server's settings in the environment: {', '.join(missing)}")
    from infrastructure.bootstrap import Endpoints, build  # noqa: PLC0415 - only when seeding
    from infrastructure.settings import Settings  # noqa: PLC0415

    endpoints = Endpoints(database_url=os.environ["KEYLEDGER_DATABASE_URL"],
                          redis_url=os.environ["KEYLEDGER_REDIS_URL"])
    container = build(Settings.from_env(os.environ), endpoints)
    try:
        return _mint(container, emails, progress=progress, label=label)
    finally:
        container.close()


def _mint(container: Container, emails: Sequence[str], *, progress: TextIO, label: str) -> list[str]:
    """Mints and saves the logins, ``BATCH`` per transaction, showing progress."""
    from domain.client import DASHBOARD  # noqa: PLC0415

    endpoint = container.tokens
    users = {email: endpoint.find_user(email) for email in set(emails)}
    unknown = sorted(email for email, user in users.items() if user is None)
    if unknown:
        raise SetupError(f"--seed-logins: no account for {unknown[0]} (is the environment the server's?)")
    disabled = sorted(email for email, user in users.items() if user is not None and user.disabled)
    if disabled:
        raise SetupError(f"--seed-logins: the account {disabled[0]} is disabled: the password grant refuses it")
    scope = endpoint.granted_scope(DASHBOARD.scopes, None)  # what a login that asks for no scope gets
    refresh_tokens: list[str] = []
    started = time.monotonic()
    for start in range(0, len(emails), BATCH):
        aggregates: list[object] = []
        guards: dict[object, int] = {}
        for email in emails[start:start + BATCH]:
            user = users[email]
            assert user is not None
            issued = endpoint.login_tokens(user, scope, decided_on=user.version)
            aggregates += issued.aggregates
            guards.update(issued.guards)
            refresh_tokens.append(issued.refresh_token or "")
        container.app.save(*aggregates, guards=list(guards.items()))
        progress.write(f"\r{label}: {len(refresh_tokens)}/{len(emails)} seeded")
        progress.flush()
    progress.write(f" in {time.monotonic() - started:.1f} s\n")
    return refresh_tokens

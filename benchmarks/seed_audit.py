"""``python -m benchmarks seed-audit --events 5000000``: loads a realistic history straight into the event store.

Unlike the load scenarios this imports keyledger itself: it builds real aggregates, serialises their events with
the application's own mapper and COPYs them into the event store (under the lock the recorder takes, so positions
stay in commit order), then brings every read model up to date with progress. The history spans ``--days`` days:
several projects, each with members (one owner, one auditor), thousands of clients in all; client_credentials
tokens (some revoked, in bulk), members' dashboard logins with refresh rotations, and refused requests.

Seeded accounts log in with ``BENCH_PASSWORD``: ``audit-owner-0@bench.keyledger.test`` owns project 0, which the
``audit_page`` and ``audit_export`` scenarios read. Point it at the server's database (stop the server, or expect
it to answer slowly while its runners catch up): ``KEYLEDGER_DATABASE_URL``, ``KEYLEDGER_REDIS_URL`` and
``KEYLEDGER_SECRET_KEY`` as for ``keyledger serve``.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

BENCH_PASSWORD = "bench audit password 0"
OWNER_EMAIL = "audit-owner-{}@bench.keyledger.test"
DOMAIN = "bench.keyledger.test"


@dataclass
class World:
    """What the generator has created so far (projects, their clients and members, recent tokens)."""

    projects: list[UUID] = field(default_factory=list)
    clients: list[tuple[UUID, str]] = field(default_factory=list)  # (project, client_id)
    members: list[UUID] = field(default_factory=list)
    recent: deque[Any] = field(default_factory=lambda: deque(maxlen=2000))
    refresh: deque[Any] = field(default_factory=lambda: deque(maxlen=500))


class Clock:
    """A synthetic clock: the history's events spread evenly over ``days`` days ending now."""

    def __init__(self, events: int, days: float) -> None:
        self.now = datetime.now(tz=UTC) - timedelta(days=days)
        self.step = timedelta(days=days) / max(events, 1)

    def tick(self) -> datetime:
        self.now += self.step
        return self.now


def accounts(args: argparse.Namespace, world: World, password_hash: str) -> Iterator[Any]:
    """Users, projects, memberships and clients: the aggregates of the platform's population."""
    from domain.client import Client  # noqa: PLC0415 - keyledger is imported only by this command
    from domain.project import Project  # noqa: PLC0415
    from domain.user import EmailIndex, User  # noqa: PLC0415

    def person(email: str) -> tuple[UUID, list[Any]]:
        user_id = uuid4()
        actor = f"user:{user_id}"
        return user_id, [User(user_id=user_id, email=email, password_hash=password_hash, actor=actor),
                         EmailIndex(email=email, user_id=user_id, actor=actor)]

    for p in range(args.projects):
        owner, made = person(OWNER_EMAIL.format(p))
        project = Project(project_id=uuid4(), name=f"bench project {p}", owner_id=owner, actor=f"user:{owner}")
        auditor, more = person(f"audit-auditor-{p}@{DOMAIN}")
        project.add_member(user_id=auditor, role="auditor", actor=f"user:{owner}")  # type: ignore[arg-type]
        world.projects.append(project.id)
        yield from (*made, *more)
        for m in range(args.members // args.projects):
            member, rows = person(f"audit-member-{p}-{m}@{DOMAIN}")
            project.add_member(user_id=member, role="developer", actor=f"user:{owner}")  # type: ignore[arg-type]
            world.members.append(member)
            yield from rows
        yield project
        for c in range(args.clients // args.projects):
            client_id = f"klc_bench{p}x{c}"
            world.clients.append((project.id, client_id))
            yield Client(client_id=client_id, project_id=project.id, name=f"key {c}", scope="project:read",
                         secret_hash=uuid4().hex, secret_hint="klcs_...0000",
                         secret_expires_at=datetime.now(tz=UTC) + timedelta(days=365), access_token_ttl=None,
                         actor=f"user:{owner}")


def client_token(world: World, rng: random.Random, now: datetime) -> Any:
    """A client_credentials access token of a random client."""
    from domain.token import Token, TokenKind  # noqa: PLC0415

    project, client_id = rng.choice(world.clients)
    token = Token(token_id=uuid4(), kind=TokenKind.ACCESS, project_id=project, client_id=client_id, user_id=None,
                  scope="project:read", grant_type="client_credentials", issued_at=now,
                  expires_at=now + timedelta(hours=1), family_id=None, parent_id=None, actor=f"client:{client_id}",
                  family_expires_at=None, value_hash=None, account_version=None)
    world.recent.append(token)
    return token


def login(world: World, rng: random.Random, now: datetime) -> list[Any]:
    """A member's dashboard login (a refresh token and an access token), or a rotation of an earlier one."""
    from domain.token import Token, TokenKind  # noqa: PLC0415

    parent = world.refresh.popleft() if world.refresh and rng.random() < 0.6 else None
    user = parent.user_id if parent is not None else rng.choice(world.members)
    family = parent.family_id if parent is not None else None
    refresh_id = uuid4()
    family = family or refresh_id

    def token(token_id: UUID, kind: TokenKind, ttl: timedelta) -> Any:
        return Token(token_id=token_id, kind=kind, project_id=None, client_id="dashboard", user_id=user,
                     scope="project:read", grant_type="refresh_token" if parent else "password", issued_at=now,
                     expires_at=now + ttl, family_id=family, parent_id=parent.id if parent else None,
                     actor=f"user:{user}", family_expires_at=now + timedelta(days=90) if kind == "refresh" else None,
                     value_hash=None, account_version=None)

    child, access = token(refresh_id, TokenKind.REFRESH, timedelta(days=30)), token(uuid4(), TokenKind.ACCESS,
                                                                                      timedelta(minutes=15))
    made = [child, access]
    if parent is not None:
        parent.refresh(refresh_id=child.id, access_id=access.id, now=now, actor=f"user:{user}")
        made.append(parent)
    world.refresh.append(child)
    return made


def revocation(world: World, rng: random.Random) -> list[Any]:
    """A bulk revocation of a few recent client tokens by one command."""
    revocation_id, picked = uuid4(), []
    for _ in range(min(len(world.recent), rng.randint(1, 4))):
        token = world.recent.popleft()
        token.revoke(reason="revoked by project administrator", actor=f"user:{rng.choice(world.members)}",
                     revocation_id=revocation_id)
        picked.append(token)
    return picked


def refusal(world: World, rng: random.Random) -> Any:
    """A refused client_credentials request (wrong secret) from one of a few addresses."""
    from domain.refusal import Refusal  # noqa: PLC0415

    project, client_id = rng.choice(world.clients)
    return Refusal(refusal_id=uuid4(), project_id=project, grant_type="client_credentials", client_id=client_id,
                   user_id=None, token_id=None, reason="client_secret_wrong", error="invalid_client",
                   source=f"198.51.100.{rng.randint(1, 254)}", user_agent="bench-seeder/1", actor="system")


def history(world: World, rng: random.Random, clock: Clock) -> Iterator[Any]:
    """An endless stream of token-life aggregates, in a realistic mix, made at the clock's time."""
    while True:
        roll = rng.random()
        now = clock.now
        if roll < 0.70:
            yield client_token(world, rng, now)
        elif roll < 0.80 and world.recent:
            yield from revocation(world, rng)
        elif roll < 0.95:
            yield from login(world, rng, now)
        else:
            yield refusal(world, rng)


def events_of(aggregates: Iterable[Any], clock: Clock) -> Iterator[Any]:
    """The pending events of ``aggregates``, each stamped with the synthetic clock's next instant."""
    for aggregate in aggregates:
        for event in aggregate.collect_events():
            object.__setattr__(event, "timestamp", clock.tick())
            yield event


def copy_events(app: Any, events: list[Any]) -> None:
    """Serialises ``events`` with the application's mapper and COPYs them into the store, in order."""
    from psycopg.sql import SQL, Identifier  # noqa: PLC0415

    recorder = app.recorder
    table = SQL("{}.{}").format(Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name))
    stored = [app.mapper.to_stored_event(e) for e in events]
    with recorder.datastore.transaction(commit=True) as curs:
        curs.execute(SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(table))
        with curs.copy(SQL("COPY {} (originator_id, originator_version, topic, state) FROM STDIN").format(table)) as c:
            for s in stored:
                c.write_row((s.originator_id, s.originator_version, s.topic, s.state))


def progress(label: str, done: int, total: int, started: float) -> None:
    """One status line on stderr."""
    rate = done / max(time.monotonic() - started, 1e-9)
    print(f"\r{label}: {done:,} of {total:,} ({100 * done // max(total, 1)}%), {rate:,.0f}/s   ", end="",
          file=sys.stderr, flush=True)


def seed(args: argparse.Namespace, container: Any) -> int:
    """Writes the history; returns the number of events written."""
    from infrastructure.crypto.hashing import Argon2PasswordHasher  # noqa: PLC0415

    rng, world = random.Random(args.seed), World()
    clock = Clock(args.events, args.days)
    written, batch, started = 0, [], time.monotonic()
    population = accounts(args, world, Argon2PasswordHasher().hash(BENCH_PASSWORD))
    source = _chain(population, history(world, rng, clock))
    for event in events_of(source, clock):
        batch.append(event)
        if len(batch) >= args.batch:
            copy_events(container.app, batch)
            written += len(batch)
            batch = []
            progress("events written", written, args.events, started)
            if written >= args.events:
                break
    if batch:
        copy_events(container.app, batch)
        written += len(batch)
    progress("events written", written, args.events, started)
    print(file=sys.stderr)
    return written


def _chain(*sources: Iterable[Any]) -> Iterator[Any]:
    for source in sources:
        yield from source


def catch_up(container: Any, batch_size: int) -> None:
    """Brings every read model to the store's head, with a progress line each (the audit model first).

    Each batch is applied and tracked in one transaction, as the projection runner does; the models that write a
    statement per event get psycopg's pipeline mode, which sends a batch's statements without waiting for each
    answer (the audit model writes with COPY, which pipeline mode does not take).
    """
    recorder, mapper = container.app.recorder, container.app.mapper
    head = recorder.max_notification_id() or 0
    for name, view in sorted(container.views.items(), key=lambda item: item[0] != "audit"):
        started = time.monotonic()
        while (position := view.position()) < head:
            # A bounded range: with the head as the stop, PostgreSQL sorts every remaining match of the topics.
            stop = min(head, position + 4 * batch_size)
            notifications = recorder.select_notifications(start=position, limit=batch_size, stop=stop,
                                                          topics=sorted(view.topics), inclusive_of_start=False)
            last = notifications[-1].id if len(notifications) == batch_size else stop
            _apply(view, view.decode(mapper, notifications), last, after=position, piped=name != "audit")
            progress(f"projection {name}", last, head, started)
        print(file=sys.stderr)


def _apply(view: Any, events: list[Any], last: int, *, after: int, piped: bool) -> None:
    """``ReadModel.apply_batch`` with pipeline mode: applies nothing if another writer moved the model first."""
    from eventsourcing.persistence import Tracking  # noqa: PLC0415

    from projections.base import APPLICATION_NAME  # noqa: PLC0415

    with view.datastore.transaction(commit=True) as curs:
        view.lock(curs)
        if (view._max_tracking_id(APPLICATION_NAME, curs) or 0) != after:
            return
        if piped:
            with curs.connection.pipeline():
                view.apply_events(curs, events)
        else:
            view.apply_events(curs, events)
        view._insert_tracking(curs, Tracking(APPLICATION_NAME, last))


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks seed-audit``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks seed-audit", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events to write (default 1,000,000)")
    parser.add_argument("--projects", type=int, default=5)
    parser.add_argument("--clients", type=int, default=5_000, help="clients in all projects (default 5,000)")
    parser.add_argument("--members", type=int, default=2_000, help="members in all projects (default 2,000)")
    parser.add_argument("--days", type=float, default=90.0, help="days the history spans (default 90)")
    parser.add_argument("--batch", type=int, default=20_000, help="events per COPY transaction")
    parser.add_argument("--projection-batch", type=int, default=5_000, help="events per projection transaction")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--catch-up-only", action="store_true", help="write nothing; bring the read models up to date")
    args = parser.parse_args(argv)
    from infrastructure.bootstrap import Endpoints, build  # noqa: PLC0415
    from infrastructure.settings import Settings  # noqa: PLC0415

    settings = Settings.from_env(os.environ)
    endpoints = Endpoints(database_url=os.environ["KEYLEDGER_DATABASE_URL"],
                          redis_url=os.environ["KEYLEDGER_REDIS_URL"])
    container = build(settings, endpoints, migrate=True)
    try:
        written = 0 if args.catch_up_only else seed(args, container)
        catch_up(container, args.projection_batch)
    finally:
        container.close()
    print(f"seeded {written:,} events; owner of project 0: {OWNER_EMAIL.format(0)} / {BENCH_PASSWORD!r}")
    return 0

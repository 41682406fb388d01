"""The expiry sweep's speed: ``python -m benchmarks.sweep --database-url URL [--tokens N] [--batch-size B]``.

Creates a database of its own next to URL's (dropped afterwards), saves N access tokens that expire a minute after
issuance, brings the token lookup model up to date, then times one sweep run from an hour later (every token is
due) and the projection moving the expired rows out of the hot table. Prints tokens per second for both.
"""

import argparse
import sys
import time
import uuid
from datetime import datetime, timedelta

from application.expiry import TokenSweep
from domain.token import Token, TokenKind
from infrastructure.bootstrap import Container, Endpoints, build
from infrastructure.postgres import scratch_database
from infrastructure.settings import Settings

SAVE_CHUNK = 1000


class Later:
    """The real clock an hour ahead: every token saved now is due."""

    def __init__(self, clock: object) -> None:
        self._clock = clock

    def now(self) -> datetime:
        return self._clock.now() + timedelta(hours=1)  # type: ignore[attr-defined]


def seed(container: Container, count: int) -> None:
    """Saves ``count`` one-minute access tokens of one project, in transactions of SAVE_CHUNK."""
    now, project = container.tokens.clock.now(), uuid.uuid4()
    for start in range(0, count, SAVE_CHUNK):
        container.app.save(*(Token(token_id=uuid.uuid4(), kind=TokenKind.ACCESS, project_id=project,
                                   client_id="klc_bench", user_id=None, scope="projects:read",
                                   grant_type="client_credentials", issued_at=now,
                                   expires_at=now + timedelta(minutes=1), family_id=None, parent_id=None,
                                   actor="client:klc_bench", family_expires_at=None, value_hash=None,
                                   account_version=None)
                             for _ in range(min(SAVE_CHUNK, count - start))))


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark and prints its table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sweep", description=__doc__)
    parser.add_argument("--database-url", required=True, help="a PostgreSQL server (its maintenance database)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--tokens", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=2000)
    args = parser.parse_args(argv)
    with scratch_database(args.database_url, "keyledger_bench_sweep") as url:
        container = build(Settings(secret_key="benchmark-server-key-" + "b" * 32), Endpoints(url, args.redis_url),
                          migrate=True)
        try:
            seed(container, args.tokens)
            runner = container.runner(container.lookup.name)
            runner.catch_up()
            sweep = TokenSweep(app=container.app, clock=Later(container.tokens.clock), index=container.lookup,
                               batch_size=args.batch_size, max_batches=10 ** 6)
            started = time.perf_counter()
            result = sweep.run()
            swept = time.perf_counter() - started
            started = time.perf_counter()
            runner.catch_up()
            moved = time.perf_counter() - started
        finally:
            container.close()
    print("| step | tokens | seconds | tokens/s |\n|---|---:|---:|---:|")
    print(f"| sweep (TokenExpired recorded) | {result.expired} | {swept:.2f} | {result.expired / swept:,.0f} |")
    print(f"| projection (rows moved out of the hot table) | {result.expired} | {moved:.2f} | "
          f"{result.expired / moved:,.0f} |")
    return 0 if result.expired == args.tokens else 1


if __name__ == "__main__":
    sys.exit(main())

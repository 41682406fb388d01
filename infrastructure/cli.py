"""The ``keyledger`` command."""

import argparse
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from infrastructure import audit_cli, embedded
from infrastructure.bootstrap import READ_MODELS, TOKEN_RATE_MODELS, Container, Endpoints, build
from infrastructure.keys_cli import add_parsers as add_key_parsers
from infrastructure.serving import freeze_startup_heap, quiet_upgrade_requests, serve_processes
from infrastructure.settings import Settings, SettingsError
from infrastructure.users_cli import add_parsers as add_user_parsers
from infrastructure.workers_cli import add_parsers as add_worker_parsers
from projections.outbox import outbox_status
from projections.rebuild import REPLAYING, SWAP_ATTEMPTS, RebuildProgress, RebuildRunning, TablesInUse
from workers.inprocess import in_process_workers

logger = logging.getLogger("keyledger")
GRACEFUL_STOP = 10  # seconds a stopping server gives the requests under way (the supervisor waits 30 for it)


@contextlib.contextmanager
def runtime(settings: Settings) -> Iterator[tuple[Settings, Endpoints]]:
    """Resolves where PostgreSQL and Redis are, starting embedded servers for whichever is not configured."""
    postgres = redis_server = None
    lock = embedded.data_dir_lock(settings.data_dir) if settings.embedded or not settings.redis_url else None
    with lock or contextlib.nullcontext():
        try:
            database_url = settings.database_url
            if database_url is None:
                postgres, database_url = embedded.start_postgres(settings.data_dir)
                logger.info("embedded PostgreSQL running in %s", (settings.data_dir / "postgres").resolve())
            redis_url = settings.redis_url
            if redis_url is None:
                redis_server, redis_url = embedded.start_redis(settings.data_dir)
                logger.info("embedded Redis running with %s", (settings.data_dir / "redis.rdb").resolve())
            if settings.secret_key is None and settings.embedded:
                settings = replace(settings, secret_key=embedded.secret_key_file(settings.data_dir))
            yield settings, Endpoints(database_url=database_url, redis_url=redis_url)
        finally:
            embedded.stop(postgres, redis_server)


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def serve(args: argparse.Namespace, settings: Settings) -> int:
    """Runs the API with the projections (and, in one process, everything else)."""
    import uvicorn  # noqa: PLC0415

    # uvicorn shuts down gracefully on SIGTERM and then re-raises the signal under the handler it found: make that
    # handler unwind the stack, so the embedded servers are stopped and the data dir unlocked.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    from infrastructure.http.app import served_app  # noqa: PLC0415

    # uvicorn would trust X-Forwarded-For from 127.0.0.1 by default: only the configured proxies may set the
    # client address that per-address abuse limits count against.
    proxies: dict[str, Any] = {"proxy_headers": bool(settings.trusted_proxies),
                               "forwarded_allow_ips": list(settings.trusted_proxies) or None}
    # No WebSocket: keyledger serves none, and an upgrade would hand the connection to a protocol whose end the
    # accepting process of ``--workers N`` never hears of (``infrastructure.dispatch``).
    # A stop waits for requests under way at most GRACEFUL_STOP seconds (uvicorn's default waits for ever: one
    # client trickling a body would hold the process, and with it the embedded servers, after SIGTERM).
    options: dict[str, Any] = {"access_log": False, "log_level": "warning", "loop": "uvloop", "http": "httptools",
                               "ws": "none", "timeout_graceful_shutdown": GRACEFUL_STOP, **proxies}
    with runtime(settings) as (resolved, endpoints):
        settings = resolved
        container = build(settings, endpoints, migrate=True)  # tables, the first signing key
        # Embedded: one process runs everything, the worker and the scheduler included (stopped before the
        # container closes and the embedded servers stop).
        jobs = contextlib.ExitStack()
        try:
            if args.workers == 1:
                container.start_projections()
            else:  # the API processes run the others (see TOKEN_RATE_MODELS); waiters there read the position
                container.start_projections(TOKEN_RATE_MODELS, remote_waiters=True)
            if settings.embedded:
                jobs.enter_context(in_process_workers(container, endpoints.redis_url))
            logger.info("keyledger serving on http://%s:%d (issuer %s)", args.host, args.port, settings.issuer)
            if args.workers > 1:
                # Each API process builds its own container and runs the projections of the models requests wait
                # on after a command, so such a wait wakes a runner in its own process instead of polling.
                os.environ.update({"KEYLEDGER_DATABASE_URL": endpoints.database_url,
                                   "KEYLEDGER_REDIS_URL": endpoints.redis_url,
                                   "KEYLEDGER_SECRET_KEY": settings.secret_key or ""})
                freeze_startup_heap()
                return serve_processes(args.workers, host=args.host, port=args.port, options=options)
            quiet_upgrade_requests()
            uvicorn.run(served_app(settings, endpoints, container), host=args.host, port=args.port, **options)
        finally:
            jobs.close()
            container.close()
    return 0


def _progress(name: str) -> Callable[[RebuildProgress], None]:
    """A rebuild's progress on stderr: a line per phase, and the replay's position of the head, updated in place."""
    replaying = [False]

    def show(progress: RebuildProgress) -> None:
        if progress.phase == REPLAYING:
            percent = 100 * progress.position // progress.head if progress.head else 100
            print(f"\r{name}: replayed up to position {progress.position} of {progress.head} ({percent}%)", end="",
                  file=sys.stderr, flush=True)
            replaying[0] = True
            return
        print(("\n" if replaying[0] else "") + f"{name}: {progress.phase}", file=sys.stderr, flush=True)
        replaying[0] = False

    return show


def projections(args: argparse.Namespace, settings: Settings) -> int:
    """``keyledger projections status|rebuild NAME``."""
    known = [model.name for model in READ_MODELS]
    if args.action == "status" and args.attempts is not None:
        print("keyledger projections status: --attempts applies to a rebuild only", file=sys.stderr)
        return 2
    if args.action == "rebuild" and args.name not in known:  # a rebuild replays the whole store: name it
        given = "no projection named" if args.name is None else f"unknown projection {args.name!r}"
        print(f"keyledger projections rebuild: {given}; known: {', '.join(known)}", file=sys.stderr)
        return 2
    with runtime(settings) as (resolved, endpoints):
        container: Container = build(resolved, endpoints, migrate=True)
        try:
            if args.action == "rebuild":
                # One transaction: API processes keep answering from the previous content until the commit.
                try:
                    position = container.runner(args.name).rebuild(_progress(args.name), attempts=args.attempts)
                except (TablesInUse, RebuildRunning) as exc:
                    print(f"\nkeyledger projections rebuild: {exc}; try again later", file=sys.stderr)
                    return 1
                print(f"{args.name}: rebuilt up to position {position}")
                return 0
            # The positions first, the head after: a model may move on between the reads, never past that head.
            positions = {name: view.position() for name, view in container.views.items()}
            head = container.app.recorder.max_notification_id() or 0
            print(f"{'projection':<16} {'position':>12} {'lag':>10}")
            for name, position in positions.items():  # a negative lag: a model ahead of its store (a restore?)
                print(f"{name:<16} {position:>12} {head - position:>10}")
            print(f"\nlag: notification ids between a projection's position and the store's head ({head}). A "
                  "projection with none of its own events to apply writes its position at most once a second.")
            outbox = outbox_status(container)
            print("\nwebhook outbox: " + ", ".join(f"{key} {value}" for key, value in outbox.items()))
            return 0
        finally:
            container.close()


def _at_least_one(text: str) -> int:
    """A count of 1 or more (argparse refuses anything else with exit status 2)."""
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, got {text!r}")
    return int(text)


def parser() -> argparse.ArgumentParser:
    """The command line."""
    top = argparse.ArgumentParser(prog="keyledger", description="Event-sourced OAuth2 authorization backend.")
    sub = top.add_subparsers(dest="command", required=True)
    run = sub.add_parser("serve", help="serve the API (embedded PostgreSQL and Redis unless configured)")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8000)
    run.add_argument("--workers", type=int, default=int(os.environ.get("KEYLEDGER_WORKERS", "1")),
                     help="API processes (default 1, or KEYLEDGER_WORKERS)")
    run.set_defaults(func=serve)
    proj = sub.add_parser("projections", help="read-model status and rebuilds")
    proj.add_argument("action", choices=["status", "rebuild"])
    proj.add_argument("name", nargs="?", help="the projection to rebuild: " + ", ".join(m.name for m in READ_MODELS))
    proj.add_argument("--attempts", type=_at_least_one, default=None, metavar="N",
                      help=f"rebuild: times the swap is tried while other transactions hold the live tables, before "
                           f"giving up with exit status 1 (default {SWAP_ATTEMPTS}, about a minute of pauses)")
    proj.set_defaults(func=projections)
    add_worker_parsers(sub)
    add_key_parsers(sub)
    add_user_parsers(sub)
    audit_cli.register(sub, runtime)
    return top


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``keyledger`` console script."""
    args = parser().parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as exc:
        print(f"keyledger: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        if getattr(args, "needs_endpoints", False):
            with runtime(settings) as (resolved, endpoints):
                return int(args.func(args, resolved, endpoints))
        return int(args.func(args, settings))
    except (SettingsError, embedded.AlreadyRunning) as exc:
        print(f"keyledger: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

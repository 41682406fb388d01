"""Command line: ``python -m benchmarks --url http://127.0.0.1:8000 --scenario password --concurrency 32``."""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import time
from pathlib import Path

from benchmarks import audit_scenarios  # noqa: F401 - registers the audit scenarios
from benchmarks.cpu import machine_speed, speed_line
from benchmarks.fixtures import SetupContext, SetupError, parse_target
from benchmarks.httpclient import Target
from benchmarks.report import ScenarioResult, markdown_table, print_error_samples, write_json
from benchmarks.runner import run_scenario
from benchmarks.scenarios import SCENARIOS

__all__ = ["build_parser", "main"]

DEFAULT_URL = "http://127.0.0.1:8000"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``python -m benchmarks``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Load scenarios against a running keyledger server; prints a Markdown results table.",
    )
    parser.add_argument("--url", default=DEFAULT_URL, help=f"server base URL (default {DEFAULT_URL})")
    parser.add_argument(
        "--scenario",
        action="append",
        choices=sorted(SCENARIOS),
        help="scenario to run; repeat for several (default: all, in registration order)",
    )
    parser.add_argument("--concurrency", type=_positive_int, default=32, help="virtual users (default 32)")
    parser.add_argument("--duration", type=_non_negative_float, default=20.0, help="measured seconds (default 20)")
    parser.add_argument("--warmup", type=_non_negative_float, default=2.0, help="unmeasured seconds first (default 2)")
    parser.add_argument(
        "--processes", type=_positive_int, default=1, help="OS processes sharing the concurrency (default 1)"
    )
    parser.add_argument(
        "--users", type=_positive_int, default=8, help="bench accounts to sign up and rotate among (default 8)"
    )
    parser.add_argument(
        "--revoke-rate",
        type=_non_negative_float,
        default=400.0,
        metavar="R",
        help="estimated revocations/s: the revoke, revoke_dashboard and logout scenarios pre-issue R x (warm-up + "
        "duration) x 1.25 tokens; if they run out, further ones are issued on the fly, unmeasured (default 400)",
    )
    parser.add_argument(
        "--rate",
        type=_non_negative_float,
        default=0.0,
        metavar="R",
        help="offer R requests/s on a fixed schedule shared by the virtual users (open loop, as wrk2; latency counts "
        "from when each request was due); default 0: closed loop, each user sending as soon as it has its answer",
    )
    parser.add_argument("--seed-logins", action="store_true",
                        help="logout: mint its logins in this process from the server's settings in the environment "
                             "(KEYLEDGER_DATABASE_URL, KEYLEDGER_REDIS_URL, KEYLEDGER_SECRET_KEY, ...) instead of one "
                             "argon2id password grant each: seconds instead of minutes; a local server only")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per setup request (default 30)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument("--trace", type=Path, metavar="PATH",
                        help="also write every measured response (scenario, start s, latency ms) to PATH and print "
                             "where each scenario's p99 tail began")
    parser.add_argument("--allow-remote", action="store_true", help="allow a server that is not on loopback")
    parser.add_argument("--cpu", action="store_true",
                        help="also print CPU µs per request of the server's processes, PostgreSQL, Redis and this "
                             "load generator, read from /proc (Linux, server on this machine)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; return the process exit status (1 if setup or a scenario failed)."""
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        target = parse_target(args.url, allow_remote=args.allow_remote)
    except ValueError as exc:
        parser.error(str(exc))
    if args.duration <= 0:
        parser.error("--duration must be positive")
    if args.processes > args.concurrency:
        parser.error("--processes cannot exceed --concurrency (each process needs a virtual user)")
    names: list[str] = list(dict.fromkeys(args.scenario or SCENARIOS))

    context = SetupContext(
        target,
        timeout=args.timeout,
        concurrency=args.concurrency,
        window=args.warmup + args.duration,
        revoke_rate=args.revoke_rate,
        seed_logins=args.seed_logins,
    )
    try:
        asyncio.run(context.signup(args.users))
    except SetupError as exc:
        print(f"setup failed: {exc}", file=sys.stderr)
        return 1
    print(f"signed up {len(context.accounts)} bench accounts on {args.url}", file=sys.stderr)

    _empty(args.trace)  # each scenario appends its responses
    results: list[ScenarioResult] = []
    failed = False
    speeds: dict[str, float] = {}
    if args.cpu:
        speeds["before"] = machine_speed()
        print(speed_line("before", speeds["before"]), file=sys.stderr)
    for name in names:
        try:
            result = _run_named(name, context, target, args)
        except (SetupError, RuntimeError) as exc:
            print(f"\n[{name}] failed: {exc}", file=sys.stderr)
            failed = True
            continue
        print_error_samples(result)
        results.append(result)

    if args.cpu:
        speeds["after"] = machine_speed()
        print(speed_line("after", speeds["after"]), file=sys.stderr)
    if results:
        print(markdown_table(results))
    if args.json is not None:
        _write_json(args, results, started=started, speeds=speeds)
    return 1 if failed else 0


def _run_named(name: str, context: SetupContext, target: Target, args: argparse.Namespace) -> ScenarioResult:
    """Sets up and runs the scenario ``name`` as the command line asks."""
    plan = asyncio.run(SCENARIOS[name](context))
    if args.rate > 0:
        print(f"[{name}] open loop: {args.rate:g} requests/s offered on a fixed schedule, latency counted from when "
              "each request was due", file=sys.stderr)
    # How much of the run's work its window left to the read models, timed from the load's end (not from when the
    # load generator's own work after it is done): the token that reads them is taken before the run (an access
    # token outlives any run's window by minutes).
    account = context.accounts[0] if context.accounts else None
    token: str | None = None
    if account is not None:
        try:
            token = asyncio.run(context.fresh_password_tokens(account))["access_token"]
        except SetupError as exc:
            print(f"[{name}] no read of the read models after the run: {exc}", file=sys.stderr)

    def caught_up(load_ended: float) -> None:
        if account is None or token is None:
            return
        try:
            asyncio.run(context.settled(account, label=f"[{name}]", what="the run", token=token, since=load_ended))
        except SetupError as exc:
            print(f"[{name}] {exc}", file=sys.stderr)

    return run_scenario(name, target, plan, concurrency=args.concurrency, processes=args.processes,
                        warmup=args.warmup, duration=args.duration, cpu=args.cpu, trace=args.trace, rate=args.rate,
                        after_load=caught_up)


def _empty(path: Path | None) -> None:
    """Empties the file at ``path`` (creating it), if one is given."""
    if path is not None:
        path.write_text("", encoding="utf-8")


def _write_json(args: argparse.Namespace, results: list[ScenarioResult], *, started: str,
                speeds: dict[str, float]) -> None:
    """Writes ``--json``: the results and the run's settings."""
    meta = {
        "url": args.url,
        "started": started,
        "python": platform.python_version(),
        "concurrency": args.concurrency,
        "processes": args.processes,
        "warmup_s": args.warmup,
        "duration_s": args.duration,
        "users": args.users,
        "revoke_rate": args.revoke_rate,
        "rate": args.rate,  # offered requests/s (open loop), 0 for a closed loop
        "additions_s": speeds,  # with --cpu: the machine's yardstick before and after the scenarios
    }
    write_json(args.json, results, meta)

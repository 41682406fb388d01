"""``keyledger audit verify|export``: the platform operator's view of the audit ledger, across projects.

The operator reads as the database owner, not as the tenant role: every project's entries and the platform-level
ones (refusals of unknown clients and of dashboard logins, users, signing keys) are theirs to see.
"""

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any, TextIO
from uuid import UUID

from infrastructure.bootstrap import Container, build
from projections.audit_query import ALL_PROJECTS, PLATFORM, AuditQuery
from projections.audit_verify import Report, verify

Runtime = Callable[[Any], AbstractContextManager[tuple[Any, Any]]]


def project_arg(value: str) -> str:
    """``--project``: a project id, or ``platform`` for the entries of no project."""
    if value == PLATFORM:
        return value
    try:
        return str(UUID(value))
    except ValueError:
        raise argparse.ArgumentTypeError("a project id, or 'platform'") from None


def instant_arg(value: str) -> datetime:
    """``--since``/``--until``: an ISO 8601 instant (UTC when it has no offset)."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError("an ISO 8601 date or time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def register(sub: Any, runtime: Runtime) -> None:
    """Adds ``audit verify`` and ``audit export`` to the ``keyledger`` command line."""
    audit = sub.add_parser("audit", help="verify or export the audit ledger (the platform operator's view)")
    actions = audit.add_subparsers(dest="audit_action", required=True)
    check = actions.add_parser("verify", help="recompute the hash chains and compare the ledger with the event store")
    check.add_argument("--project", type=project_arg,
                       help="a project id, or 'platform' for its own chain (default: every project and the platform)")
    export = actions.add_parser("export", help="write entries in position order to stdout")
    export.add_argument("--project", type=project_arg,
                        help="a project id, or 'platform' (default: every project and the platform)")
    export.add_argument("--since", type=instant_arg, help="entries that occurred at or after this instant")
    export.add_argument("--until", type=instant_arg, help="entries that occurred before this instant")
    export.add_argument("--format", choices=["ndjson", "csv"], default="ndjson")
    check.set_defaults(func=lambda args, settings: _with_container(runtime, settings, lambda c: run_verify(c, args)))
    export.set_defaults(func=lambda args, settings: _with_container(
        runtime, settings, lambda c: run_export(c, args, sys.stdout)))


def _with_container(runtime: Runtime, settings: Any, action: Callable[[Container], int]) -> int:
    with runtime(settings) as (resolved, endpoints):
        container = build(resolved, endpoints, migrate=True)
        try:
            return action(container)
        finally:
            container.close()


def _catch_up(container: Container) -> None:
    """Brings the ledger up to the store's head first, so that what is checked or exported is current."""
    container.runner(container.audit.name).catch_up()


def show_progress(position: int, stop: int) -> None:
    """The progress display of ``verify``, on stderr."""
    percent = 100 * position // stop if stop else 100
    print(f"\raudit verify: position {position} of {stop} ({percent}%)", end="", file=sys.stderr, flush=True)


def run_verify(container: Container, args: argparse.Namespace) -> int:
    """Verifies, prints each problem and a summary; exit status 1 when anything is missing, extra or altered."""
    _catch_up(container)
    project = None if args.project in (None, PLATFORM) else UUID(args.project)
    report = verify(container.app.recorder, container.app.mapper, container.audit, project_id=project,
                    platform=args.project == PLATFORM, progress=show_progress)
    print(file=sys.stderr)
    print_report(report, sys.stdout)
    return 0 if report.ok else 1


def print_report(report: Report, out: TextIO) -> None:
    """One line per problem, then the summary."""
    for problem in report.problems:
        print(f"{problem.kind} position {problem.position}: {problem.detail}", file=out)
    hidden = sum(report.counts.values()) - len(report.problems)
    if hidden > 0:
        print(f"... and {hidden} more", file=out)
    summary = ", ".join(f"{report.counts[k]} {k}" for k in ("missing", "extra", "altered"))
    verdict = "OK" if report.ok else "PROBLEMS FOUND"
    print(f"audit verify: {verdict}: {report.checked} entries up to position {report.up_to}: {summary}", file=out)


def export_query(args: argparse.Namespace) -> AuditQuery:
    """The query an export's options describe."""
    project = args.project
    scope = PLATFORM if project == PLATFORM else ALL_PROJECTS
    project_id = UUID(project) if project not in (None, PLATFORM) else None
    return AuditQuery(project_id=project_id, scope=scope, since=args.since, until=args.until)


def run_export(container: Container, args: argparse.Namespace, out: TextIO) -> int:
    """Streams the entries to ``out`` (flat memory: a server-side cursor, or COPY for CSV)."""
    _catch_up(container)
    query = export_query(args)
    chunks: Iterator[str]
    if args.format == "csv":
        chunks = (block.decode() for block in container.audit.csv(query, as_tenant=False))
    else:
        chunks = ("\n".join(lines) + "\n" for lines in container.audit.lines(query, as_tenant=False))
    for chunk in chunks:
        out.write(chunk)
    out.flush()
    return 0

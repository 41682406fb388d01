"""``keyledger keys rotate [--now]``: rotating the platform's signing keys by hand."""

import argparse
from typing import Any

from infrastructure.bootstrap import Container, Endpoints, build
from infrastructure.settings import Settings
from workers.keys import key_rotation


def rotate(args: argparse.Namespace, settings: Settings, endpoints: Endpoints) -> int:
    """Pre-publishes a successor key (the schedule activates it after the pre-publication period), or, with
    ``--now``, activates a fresh key at once and revokes the active one: every process refuses its tokens from its
    next validation on, and the JWKS drops it."""
    container: Container = build(settings, endpoints, migrate=True)
    try:
        steps = key_rotation(container).rotate(emergency=args.now, actor="operator")
    finally:
        container.close()
    for step in steps:
        print(f"{step.action} {step.kid}")
    return 0


def add_parsers(sub: Any) -> None:
    """Adds ``keys rotate`` to the ``keyledger`` command line."""
    keys = sub.add_parser("keys", help="signing keys")
    actions = keys.add_subparsers(dest="action", required=True)
    run = actions.add_parser("rotate", help="pre-publish a new signing key; --now: activate it at once and revoke "
                                            "the old one (emergency)")
    run.add_argument("--now", action="store_true", help="activate at once and revoke the old key (its tokens are "
                                                        "refused)")
    run.set_defaults(func=rotate, needs_endpoints=True)

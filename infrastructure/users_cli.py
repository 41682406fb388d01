"""``keyledger users disable|enable EMAIL``: the operator ends an account, or lets it log in again
(``application.users``)."""

import argparse
import contextlib
import sys
from collections.abc import Iterator
from typing import Any

from application.users import DisableUser, EnableUser, UserAdmin
from domain.errors import Conflict, NotFound
from infrastructure.bootstrap import Container, Endpoints, build
from infrastructure.settings import Settings

NO_ACCOUNT = "keyledger: no account is registered with that email"


@contextlib.contextmanager
def _admin(settings: Settings, endpoints: Endpoints) -> Iterator[UserAdmin]:
    """The operator's account commands on the deployment's store, closed after."""
    container: Container = build(settings, endpoints, migrate=False)  # no DDL (and its locks) on a live database
    try:
        yield UserAdmin(app=container.app, revoker=container.revoker, index=container.lookup)
    finally:
        container.close()


def disable(args: argparse.Namespace, settings: Settings, endpoints: Endpoints) -> int:
    """Disables the account, then revokes every live token of it (``application.users``); run again for an account
    already disabled, it revokes whatever is left. 1 if no account is registered with that email."""
    try:
        with _admin(settings, endpoints) as admin:
            done = admin.disable_user(DisableUser(email=args.email, actor="operator"))
    except NotFound:
        print(NO_ACCOUNT, file=sys.stderr)
        return 1
    except TimeoutError:  # the token lookup model did not catch up (is a server or worker running?), or churn
        print("keyledger: the account is disabled, but not all of its tokens could be revoked yet; run the command "
              "again", file=sys.stderr)
        return 1
    tokens = f"revoked {done.revoked} live token{'' if done.revoked == 1 else 's'}"
    print(f"disabled; {tokens}" if done.newly else f"already disabled; {tokens}")
    return 0


def enable(args: argparse.Namespace, settings: Settings, endpoints: Endpoints) -> int:
    """Lets a disabled account log in again (its revoked tokens stay revoked); 1 if no account is registered with
    that email or it changed meanwhile."""
    try:
        with _admin(settings, endpoints) as admin:
            newly = admin.enable_user(EnableUser(email=args.email, actor="operator"))
    except NotFound:
        print(NO_ACCOUNT, file=sys.stderr)
        return 1
    except Conflict as exc:
        print(f"keyledger: {exc}", file=sys.stderr)
        return 1
    print("enabled; the person logs in again (their earlier tokens stay revoked)" if newly else "not disabled")
    return 0


def add_parsers(sub: Any) -> None:
    """Adds ``users disable`` and ``users enable`` to the ``keyledger`` command line."""
    users = sub.add_parser("users", help="accounts (the platform operator's commands)")
    actions = users.add_subparsers(dest="action", required=True)
    run = actions.add_parser("disable", help="disable an account and revoke every live token of it at once")
    run.add_argument("email", help="the email the account is registered with")
    run.set_defaults(func=disable, needs_endpoints=True)
    again = actions.add_parser("enable", help="let a disabled account log in again (its revoked tokens stay revoked)")
    again.add_argument("email", help="the email the account is registered with")
    again.set_defaults(func=enable, needs_endpoints=True)

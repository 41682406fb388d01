"""What ``keyledger workers status`` shows: a tuple of status providers, each a function of the container.

Providers return rows of (component, metric, value). Another part of the system adds its own by appending a
function to :data:`STATUS_PROVIDERS` (the notification outbox's lag, say); each provider is independent, and one
that fails shows as an error row rather than hiding the others.
"""

import time
from collections.abc import Callable
from typing import Any

from projections.orphaned_tokens import OrphanedTokens
from workers.jobs import DEFAULT_QUEUE, JOBS
from workers.maintenance import heartbeat_key

StatusRow = tuple[str, str, str]
StatusProvider = Callable[[Any], list[StatusRow]]


def queue_names() -> list[str]:
    """The Dramatiq queues of the registered jobs."""
    return sorted({spec.queue for spec in JOBS.values()} | {DEFAULT_QUEUE})


def queue_depth(container: Any) -> list[StatusRow]:
    """Per queue: messages ready, in flight (taken by a worker, not yet acknowledged), delayed (retries and
    scheduled sends waiting for their time) and dead-lettered, read from the broker's Redis keys."""
    prefix = f"{container.namespace}:dramatiq"
    rows: list[StatusRow] = []
    for queue in queue_names():
        name = f"{prefix}:{queue}"
        with container.redis.pipeline(transaction=False) as pipe:
            pipe.llen(name)
            pipe.hlen(f"{name}.msgs")
            pipe.hlen(f"{name}.DQ.msgs")
            pipe.zcard(f"{name}.XQ")
            ready, stored, delayed, dead = (int(v) for v in pipe.execute())
        rows += [(f"queue {queue}", "ready", str(ready)), (f"queue {queue}", "in flight", str(max(stored - ready, 0))),
                 (f"queue {queue}", "delayed", str(delayed)), (f"queue {queue}", "dead-lettered", str(dead))]
    return rows


def heartbeat(container: Any) -> list[StatusRow]:
    """Seconds since a worker last ran the heartbeat job (scheduled every minute), or ``never``."""
    value = container.redis.get(heartbeat_key(container))
    age = "never" if value is None else f"{max(time.time() - float(value), 0.0):.0f}s ago"
    return [("workers", "last heartbeat", age)]


def expiry_backlog(container: Any) -> list[StatusRow]:
    """Tokens past expiry that the sweep has not recorded yet, the sizes of the lookup's two tables and of the
    written-through revocation list."""
    sizes = container.lookup.sizes()
    due = container.lookup.count_due(container.tokens.clock.now())
    return [("expiry sweep", "tokens due", str(due)),
            ("expiry sweep", "hot token rows", str(sizes["token_lookup"])),
            ("expiry sweep", "expired token rows", str(sizes["token_expired"])),
            ("expiry sweep", "revocation list rows", str(sizes["revoked_tokens"]))]


def orphan_backlog(container: Any) -> list[StatusRow]:
    """Live tokens of clients the clients model lists as deleted: what the next orphan sweep will decide on. Above
    zero for more than a period, a deletion was interrupted and the sweep is not running (or cannot keep up)."""
    count = OrphanedTokens(container.lookup, container.clients_view).count(container.tokens.clock.now())
    return [("orphan sweep", "tokens of deleted clients", str(count))]


def signing_keys(container: Any) -> list[StatusRow]:
    """The signing key in use and how many keys the JWKS publishes."""
    container.keys.refresh()
    snapshot = container.keys.snapshot
    return [("signing keys", "active kid", snapshot.active_kid),
            ("signing keys", "published", str(len(snapshot.published)))]


STATUS_PROVIDERS: tuple[StatusProvider, ...] = (queue_depth, heartbeat, expiry_backlog, orphan_backlog, signing_keys)


def collect(container: Any, providers: tuple[StatusProvider, ...] | None = None) -> list[StatusRow]:
    """Every provider's rows; a failing provider contributes one error row."""
    rows: list[StatusRow] = []
    for provider in providers if providers is not None else STATUS_PROVIDERS:
        try:
            rows += provider(container)
        except Exception as exc:  # one broken source must not hide the others
            rows.append((provider.__name__, "error", type(exc).__name__))
    return rows

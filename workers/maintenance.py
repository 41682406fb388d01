"""Housekeeping jobs. ``heartbeat`` proves the whole path (scheduler, broker, worker) works end to end."""

import logging
import time

from workers.jobs import job

logger = logging.getLogger("keyledger.jobs")

def heartbeat_key(container: object) -> str:
    """The deployment's heartbeat key (deployments sharing one Redis keep theirs apart by namespace)."""
    return f"{getattr(container, 'namespace')}:worker:heartbeat"  # noqa: B009 - typed as object, see below


@job("heartbeat", every=60.0, max_retries=0)
def heartbeat(container: object, **_: object) -> None:
    """Records in Redis when a worker last ran a job, for ``keyledger workers status``-style checks."""
    redis = getattr(container, "redis")  # noqa: B009 - typed as object to keep workers free of import cycles
    redis.set(heartbeat_key(container), str(time.time()), ex=3600)

"""The Dramatiq broker on Redis, built explicitly (never at import) by the process that runs actors."""

import dramatiq
from dramatiq.brokers.redis import RedisBroker


def make_broker(redis_url: str) -> RedisBroker:
    """Returns a Redis broker for ``redis_url`` and installs it as Dramatiq's global broker."""
    broker = RedisBroker(url=redis_url)
    dramatiq.set_broker(broker)
    return broker

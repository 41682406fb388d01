"""The Dramatiq broker on Redis, built explicitly (never at import) by the process that runs or enqueues jobs."""

from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage


def make_broker(redis_url: str, *, namespace: str) -> RedisBroker:
    """Returns a Redis broker whose queues live under ``namespace`` (one deployment's, see ``Container.namespace``).

    The broker is not installed as Dramatiq's global broker: actors are declared on it explicitly by
    ``workers.runtime.declare``, so two brokers (two test servers, say) can live in one process.
    """
    broker = RedisBroker(url=redis_url, namespace=f"{namespace}:dramatiq")
    broker.add_middleware(CurrentMessage())
    return broker

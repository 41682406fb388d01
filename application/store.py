"""The event-sourced Application: one event store for every aggregate of keyledger."""

from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate

from domain.errors import NotFound

A = TypeVar("A", bound=Aggregate)


class Keyledger(Application[UUID]):
    """All of keyledger's aggregates in one store, named so its tables are ``keyledger_events``.

    The repository caches aggregates and fast-forwards them with one indexed read per get, so hot look-ups (a client
    on every client_credentials request) deserialise only the events recorded since the last get.
    """

    name = "Keyledger"
    env = {"AGGREGATE_CACHE_MAXSIZE": "10000", "DEEPCOPY_FROM_AGGREGATE_CACHE": "y"}

    def load(self, aggregate_id: UUID, kind: type[A], *, copy: bool = True) -> A:
        """Returns the aggregate of type ``kind``, or raises NotFound (also when the id names another type).

        ``copy=False`` returns the cached instance itself: only for read-only use on hot paths (a deep copy of a
        client costs more than the query that fast-forwards it). Anything that may change the aggregate must copy,
        or a failed save would leave the cache ahead of the store.
        """
        try:
            aggregate: Any = self.repository.get(aggregate_id, deepcopy_from_cache=copy)
        except AggregateNotFoundError:
            raise NotFound(kind.__name__) from None
        if not isinstance(aggregate, kind):
            raise NotFound(kind.__name__)
        return aggregate

    def find(self, aggregate_id: UUID, kind: type[A], *, copy: bool = True) -> A | None:
        """Returns the aggregate or None."""
        try:
            return self.load(aggregate_id, kind, copy=copy)
        except NotFound:
            return None

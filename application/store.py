"""The event-sourced Application: one event store for every aggregate of keyledger."""

from collections.abc import Iterable, Sequence
from copy import deepcopy
from itertools import groupby
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.domain import Aggregate, DomainEvent
from eventsourcing.persistence import Recording
from eventsourcing.utils import get_topic

from domain.errors import NotFound
from domain.events import as_uuid

A = TypeVar("A", bound=Aggregate)


def mutate_all(aggregate: Any, events: Iterable[Any]) -> Any:
    """Applies ``events`` to ``aggregate`` in turn: eventsourcing's ``project_aggregate`` without its per-event
    ``isinstance`` check against a runtime Protocol, which costs more than applying a small event."""
    for domain_event in events:
        aggregate = domain_event.mutate(aggregate)
    return aggregate


class Keyledger(Application[UUID]):
    """All of keyledger's aggregates in one store, named so its tables are ``keyledger_events``.

    The repository caches aggregates and fast-forwards them with one indexed read per get, so hot look-ups (a client
    on every client_credentials request) deserialise only the events recorded since the last get.
    """

    name = "Keyledger"
    env = {"AGGREGATE_CACHE_MAXSIZE": "10000", "DEEPCOPY_FROM_AGGREGATE_CACHE": "y"}

    def save(self, *objs: Any, **kwargs: Any) -> list[Recording[UUID]]:
        """``Application.save``; a call with domain events only (the group committer's batches) skips eventsourcing's
        per-object ``isinstance`` check against a runtime Protocol, which costs more than encoding a small event.
        Events carry no aggregate to cache or snapshot, so recording them is all there is to do. ``kwargs`` reach
        the recorder's ``insert_events`` (``guards``, see ``infrastructure.recorder``) either way."""
        if not objs or not all(isinstance(obj, DomainEvent) for obj in objs):
            return super().save(*objs, **kwargs)
        processing_event: ProcessingEvent[UUID] = ProcessingEvent()
        processing_event.events.extend(objs)
        processing_event.saved_kwargs.update(kwargs)
        recordings = self._record(processing_event)
        self._notify(recordings)
        return recordings

    def load(self, aggregate_id: UUID, kind: type[A], *, copy: bool = True) -> A:
        """Returns the aggregate of type ``kind``, or raises NotFound (also when the id names another type).

        ``copy=False`` returns the cached instance itself: only for read-only use on hot paths (a deep copy of a
        client costs more than the query that fast-forwards it). Anything that may change the aggregate must copy,
        or a failed save would leave the cache ahead of the store.
        """
        try:
            aggregate: Any = self.repository.get(aggregate_id, deepcopy_from_cache=False, projector_func=mutate_all)
        except AggregateNotFoundError:
            raise NotFound(kind.__name__) from None
        if copy:
            aggregate = self._copy(aggregate_id, aggregate)
        if not isinstance(aggregate, kind):
            raise NotFound(kind.__name__)
        return aggregate

    def _copy(self, aggregate_id: UUID, aggregate: Any) -> Any:
        """Deep-copies a cached aggregate while no other thread fast-forwards it in place.

        eventsourcing 9.5 fast-forwards the cached instance under a per-aggregate lock but copies it after releasing
        that lock, so a copy could race another thread's fast-forward: a 500 ("dictionary changed size during
        iteration") or, worse, a torn copy a command would decide on. Copying under the same lock rules both out.
        """
        repository: Any = self.repository
        lock = repository._use_fastforward_lock(aggregate_id)
        try:
            with lock:
                return deepcopy(aggregate)
        finally:
            repository._disuse_fastforward_lock(aggregate_id)

    def find(self, aggregate_id: UUID, kind: type[A], *, copy: bool = True) -> A | None:
        """Returns the aggregate or None."""
        try:
            return self.load(aggregate_id, kind, copy=copy)
        except NotFound:
            return None

    def find_many(self, aggregate_ids: Sequence[UUID], kind: type[A]) -> dict[UUID, A]:
        """Returns the aggregates of type ``kind`` among ``aggregate_ids``, read in one query.

        Used by batched hot paths (one read for a whole batch of token requests). Needs a recorder with
        ``select_events_of``; other recorders fall back to one read per id.
        """
        select_many = getattr(self.recorder, "select_events_of", None)
        if select_many is None:
            found = {i: self.find(i, kind) for i in set(aggregate_ids)}  # copies, as the replayed ones are
            return {i: a for i, a in found.items() if a is not None}
        return self._reconstruct(select_many(sorted(set(aggregate_ids))), kind)

    def replayed(self, stored_events: Iterable[Any], kind: type[A]) -> dict[UUID, A]:
        """The ``kind`` aggregates replayed from stored events read elsewhere (grouped by aggregate, in version
        order), as ``find_many`` would read them."""
        return self._reconstruct(stored_events, kind)

    def _reconstruct(self, stored_events: Iterable[Any], kind: type[A]) -> dict[UUID, A]:
        """The aggregates of type ``kind`` replayed from stored events grouped by aggregate, in version order."""
        result: dict[UUID, A] = {}
        for aggregate_id, events in self._streams(stored_events, kind).items():
            aggregate = mutate_all(None, events)
            if isinstance(aggregate, kind):
                result[aggregate_id] = aggregate
        return result

    def _streams(self, stored_events: Iterable[Any], kind: type[A]) -> dict[UUID, list[Any]]:
        """The decoded events of each ``kind`` stream among stored events grouped by aggregate (streams of another
        type are skipped by their first event's topic, before anything is decoded)."""
        result: dict[UUID, list[Any]] = {}
        prefix = get_topic(kind) + "."
        for originator_id, group in groupby(stored_events, key=lambda e: e.originator_id):
            stored = list(group)
            if stored[0].topic.startswith(prefix):
                result[as_uuid(originator_id)] = [self.mapper.to_domain_event(e) for e in stored]
        return result

    def streams_and_versions(self, aggregate_ids: Sequence[UUID], kind: type[A], versioned_ids: Sequence[UUID],
                             ) -> tuple[dict[UUID, list[Any]], dict[UUID, int]]:
        """The decoded event streams of the ``kind`` aggregates among ``aggregate_ids``, not replayed (a decision
        that needs only a stream's first event skips building the aggregate), and ``versions(versioned_ids)``:
        read in one query where the recorder can (``select_events_and_versions``), since the revocation batch
        decides on both and a round trip is a large share of a small batch's cost."""
        select_both = getattr(self.recorder, "select_events_and_versions", None)
        if select_both is None:
            stored = [e for i in sorted(set(aggregate_ids)) for e in self.recorder.select_events(i)]
            return self._streams(stored, kind), self.versions(versioned_ids)
        events, versions = select_both(sorted(set(aggregate_ids)), sorted(set(versioned_ids)))
        return self._streams(events, kind), versions

    def versions(self, aggregate_ids: Sequence[UUID]) -> dict[UUID, int]:
        """Each existing aggregate's current version, in one query without decoding any event (a recorder with
        ``select_versions``; others load each aggregate)."""
        select_versions = getattr(self.recorder, "select_versions", None)
        if select_versions is not None:
            return dict(select_versions(sorted(set(aggregate_ids))))
        found = {i: self.find(i, Aggregate, copy=False) for i in set(aggregate_ids)}
        return {i: a.version for i, a in found.items() if a is not None}

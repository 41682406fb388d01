"""An application recorder that inserts a transaction's events in one round trip.

eventsourcing's recorder pipelines four statements (lock, notify, insert of a composite-type array, sync) and dumps
each event as a composite value in Python. This one calls a PL/pgSQL function with four plain arrays, which psycopg
dumps in C: the same lock (insert order equals commit order, so tailing readers never skip a late commit), a
fraction of the CPU. The table and the reads are eventsourcing's own (``select_events`` only renders its
statement once per shape of call; batch reads of several streams are added below).

The lock is held until the transaction commits, its WAL flush included, so every writer of the store waits behind
whatever the function does after taking it: only the events' insert follows it. The revocation list (below) needs no
order and is written before; and there is no ``NOTIFY``: keyledger's readers poll the head (``projections.base``),
nobody listens, and a notifying commit takes PostgreSQL's cluster-wide notification lock and writes its queue while
the table lock is still held. eventsourcing's LISTEN-based ``subscribe`` therefore hears nothing from this recorder.

The same function writes every revoked token's id through to ``revoked_tokens`` in the transaction that records its
``TokenRevoked``: a revocation is refused everywhere (DESIGN.md invariant 1) the instant it commits, without waiting
for the token lookup model to apply it. Readers check the token lookup model's status OR this list. An entry leaves
the list once its token has expired (the ``prune-revocation-list`` job, ``workers.expiry``).
"""

import time
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError, InterfaceError, OperationalError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import get_topic, retry
from psycopg.sql import SQL, Identifier, Literal

from domain.token import Token
from projections.ddl import repeatable
from projections.token_lookup import REVOKED_TOKENS_TABLE

INSERT_ATTEMPTS = 10  # eventsourcing's own recorder tries an insert as often, as long apart
INSERT_RETRY_WAIT = 0.2  # seconds


class OneTripRecorder(PostgresApplicationRecorder):
    """PostgreSQL application recorder with a one-round-trip insert function."""

    def __init__(self, datastore: Any, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        self.insert_function = f"{self.events_table_name}_insert"[: self.MAX_IDENTIFIER_LEN]
        self.guarded_insert_function = f"{self.events_table_name}_insert_guarded"[: self.MAX_IDENTIFIER_LEN]
        schema, table = Identifier(self.datastore.schema), Identifier(self.events_table_name)
        function = Identifier(self.insert_function)
        self.sql_create_statements.append(SQL(
            "CREATE TABLE IF NOT EXISTS {schema}.{revoked} (token_id uuid PRIMARY KEY)"
        ).format(schema=schema, revoked=Identifier(REVOKED_TOKENS_TABLE)))
        # The guarded function is the same insert, refused as a conflict unless each guard stream is still at the
        # version the batch was decided on: checked under the table lock, which every writer of the store takes, so
        # no write can come between the check and the insert (see ``insert_events``). Both take the same steps in
        # the same order (the revocation list before the lock), so neither waits for a lock the other holds.
        guarded = Identifier(self.guarded_insert_function)
        id_type = Identifier(self.datastore.originator_id_type)
        guard_check = SQL(
            "IF EXISTS (SELECT FROM unnest(guard_ids, guard_versions) AS g(id, version) WHERE ("
            "SELECT max(e.originator_version) FROM {schema}.{table} AS e WHERE e.originator_id = g.id"
            ") IS DISTINCT FROM g.version) THEN "
            "RAISE EXCEPTION 'a stream this batch was decided on has changed' USING ERRCODE = 'unique_violation'; "
            "END IF; ").format(schema=schema, table=table)
        guard_parameters = SQL(", guard_ids {id_type}[], guard_versions bigint[]").format(id_type=id_type)
        for name, parameters, check in ((function, SQL(""), SQL("")), (guarded, guard_parameters, guard_check)):
            self.sql_create_statements.append(SQL(
                "CREATE OR REPLACE FUNCTION {schema}.{function}("
                "ids {id_type}[], versions bigint[], topics text[], states bytea[]{parameters}) "
                "RETURNS SETOF bigint LANGUAGE plpgsql AS $body$ BEGIN "
                "PERFORM set_config('lock_timeout', '{timeout}s', true); "
                "IF {revoked_topic} = ANY(topics) THEN "
                "INSERT INTO {schema}.{revoked} (token_id) SELECT DISTINCT r.id "
                "FROM unnest(ids, topics) AS r(id, topic) WHERE r.topic = {revoked_topic} ON CONFLICT DO NOTHING; "
                "END IF; "
                "LOCK TABLE {schema}.{table} IN EXCLUSIVE MODE; {check}"
                "RETURN QUERY INSERT INTO {schema}.{table} (originator_id, originator_version, topic, state) "
                "SELECT * FROM unnest(ids, versions, topics, states) RETURNING notification_id; "
                "END $body$"
            ).format(schema=schema, function=name, table=table, id_type=id_type, parameters=parameters, check=check,
                     revoked=Identifier(REVOKED_TOKENS_TABLE), revoked_topic=Literal(get_topic(Token.TokenRevoked)),
                     timeout=SQL(str(int(self.datastore.lock_timeout)))))
        # Repeated by every process that starts: no lock on what exists, a bounded wait for one (``projections.ddl``).
        self.sql_create_statements[:] = repeatable(self.sql_create_statements, self.datastore.lock_timeout)
        # Rendered once: psycopg would compose the SQL object again on every call.
        self.insert_call = SQL("SELECT * FROM {schema}.{function}(%b, %b, %b, %b)").format(
            schema=schema, function=function).as_string(None)
        self.guarded_insert_call = SQL("SELECT * FROM {schema}.{guarded}(%b, %b, %b, %b, %b, %b) AS {function}").format(
            schema=schema, guarded=guarded, function=function).as_string(None)
        self.select_many_statement = SQL(
            "SELECT originator_id, originator_version, topic, state FROM {schema}.{table} "
            "WHERE originator_id = ANY(%b) ORDER BY originator_id, originator_version").format(
            schema=schema, table=table).as_string(None)
        # One round trip for a revocation batch: every event of the tokens (kind 0) and the clients' versions (kind 1).
        self.select_many_and_versions_statement = SQL(
            "SELECT 0 AS kind, originator_id, originator_version, topic, state FROM {schema}.{table} "
            "WHERE originator_id = ANY(%b) UNION ALL "
            "SELECT 1, originator_id, max(originator_version), NULL, NULL FROM {schema}.{table} "
            "WHERE originator_id = ANY(%b) GROUP BY originator_id ORDER BY 1, 2, 3").format(
            schema=schema, table=table).as_string(None)
        self.select_topics_statement = SQL(
            "SELECT DISTINCT topic FROM {schema}.{table} WHERE notification_id > %s AND notification_id <= %s").format(
            schema=schema, table=table).as_string(None)
        self._select_events_statements: dict[tuple[bool, bool, bool, bool], str] = {}
        self.select_stored_statement = SQL(
            "SELECT e.originator_id, e.originator_version, e.state, e.notification_id FROM {schema}.{table} AS e "
            "JOIN unnest(%b::{id_type}[], %b::bigint[]) AS w(id, version) "
            "ON e.originator_id = w.id AND e.originator_version = w.version").format(
            schema=schema, table=table, id_type=id_type).as_string(None)
        self.select_versions_statement = SQL(
            "SELECT originator_id, max(originator_version) AS version FROM {schema}.{table} "
            "WHERE originator_id = ANY(%b) GROUP BY originator_id").format(schema=schema, table=table).as_string(None)

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def select_events_of(self, originator_ids: Sequence[UUID]) -> list[StoredEvent]:
        """Returns every event of the given aggregates in one query, grouped by aggregate, in version order."""
        if not originator_ids:
            return []
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self.select_many_statement, (list(originator_ids),), prepare=True)
            return [_stored(row) for row in curs.fetchall()]

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def select_events(self, originator_id: UUID | str, *, gt: int | None = None, lte: int | None = None,
                      desc: bool = False, limit: int | None = None) -> Sequence[StoredEvent]:
        """eventsourcing's ``select_events``, with each shape of its statement rendered once: eventsourcing composes
        it from psycopg's SQL objects on every call (2.5% of an API process's CPU under the refresh load)."""
        # Descending unless ``desc is False``, as eventsourcing reads it (None means descending there too).
        shape = (gt is not None, lte is not None, desc is not False, limit is not None)
        statement = self._select_events_statements.get(shape)
        if statement is None:
            statement = self._select_events_statements[shape] = self._render_select_events(*shape)
        params = [originator_id, *(value for value in (gt, lte, limit) if value is not None)]
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, params, prepare=True)
            return [_stored(row) for row in curs.fetchall()]

    def _render_select_events(self, gt: bool, lte: bool, desc: bool, limit: bool) -> str:
        """The statement eventsourcing's ``select_events`` composes for this shape of call, as text."""
        statement = self.select_events_statement
        if gt:
            statement += SQL(" AND originator_version > %s")
        if lte:
            statement += SQL(" AND originator_version <= %s")
        statement += SQL(" ORDER BY originator_version DESC" if desc else " ORDER BY originator_version ASC")
        if limit:
            statement += SQL(" LIMIT %s")
        return statement.as_string(None)

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def select_events_and_versions(self, originator_ids: Sequence[UUID], versioned_ids: Sequence[UUID],
                                   ) -> tuple[list[StoredEvent], dict[UUID, int]]:
        """``select_events_of(originator_ids)`` and ``select_versions(versioned_ids)`` in one query: a batch that
        decides on some streams and on other aggregates' versions pays one round trip, not two."""
        if not originator_ids or not versioned_ids:
            return self.select_events_of(originator_ids), self.select_versions(versioned_ids)
        events: list[StoredEvent] = []
        versions: dict[UUID, int] = {}
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self.select_many_and_versions_statement, (list(originator_ids), list(versioned_ids)),
                         prepare=True)
            for row in curs.fetchall():
                if row["kind"] == 0:
                    events.append(_stored(row))
                else:
                    versions[row["originator_id"]] = row["originator_version"]
        return events, versions

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def select_topics(self, start: int, stop: int) -> set[str]:
        """The topics of the events after position ``start`` up to ``stop`` (the head watcher's question: did
        anything a read model cares about arrive?)."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self.select_topics_statement, (start, stop), prepare=True)
            return {row["topic"] for row in curs.fetchall()}

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def select_versions(self, originator_ids: Sequence[UUID]) -> dict[UUID, int]:
        """Returns each aggregate's current version in one query (no event is read or decoded).

        The expiry sweep decides on it: a token whose stream is still at version 1 holds only its issuance.
        """
        if not originator_ids:
            return {}
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self.select_versions_statement, (list(originator_ids),), prepare=True)
            return {row["originator_id"]: row["version"] for row in curs.fetchall()}

    def insert_events(self, stored_events: Sequence[StoredEvent], *, guards: Sequence[tuple[UUID, int]] = (),
                      **kwargs: Any) -> Sequence[int] | None:
        """Inserts ``stored_events`` atomically and returns their notification ids, in order.

        ``guards``: ``(stream id, version)`` pairs the events were decided on (a token issued to a client decided on
        the client's version). Should any of those streams have moved on (the client was revoked meanwhile), nothing
        is inserted and eventsourcing's ``IntegrityError`` is raised, as for any other conflicting write: the
        decision must be made again. Commands that write to a stream need no guard for it (its version conflicts);
        a guard covers what was read but not written.

        A connection lost during the insert (``OperationalError``, ``InterfaceError``) leaves its outcome unknown: it
        may have committed just before. The insert is tried again, as eventsourcing's recorder does, and should that
        attempt conflict, the events are looked for: stored as this call wrote them, the lost attempt committed, and
        its ids are the answer. Without that, a committed rotation was answered as a conflict (``invalid_grant``),
        and the client's retry with its refresh token, once past the in-flight window, counted as reuse and ended
        its login. That covers a connection lost while the store stays reachable (a reset, a proxy's restart); a
        store that stays away longer than the pool's wait (``StoreUnavailable``, a 503) leaves the outcome unknown,
        as before.
        """
        if not stored_events:
            return []
        uncertain = False
        for attempt in range(1, INSERT_ATTEMPTS + 1):
            try:
                return self._insert_once(stored_events, guards)
            except (InterfaceError, OperationalError):
                if attempt == INSERT_ATTEMPTS:
                    raise
                uncertain = True
                time.sleep(INSERT_RETRY_WAIT)
            except IntegrityError:
                committed = self._committed_ids(stored_events) if uncertain else None
                if committed is None:
                    raise
                return committed
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _insert_once(self, stored_events: Sequence[StoredEvent], guards: Sequence[tuple[UUID, int]]) -> list[int]:
        """One attempt of ``insert_events``: one statement, its own transaction."""
        params: tuple[list[Any], ...] = (
            [e.originator_id for e in stored_events], [e.originator_version for e in stored_events],
            [e.topic for e in stored_events], [e.state for e in stored_events])
        call = self.insert_call
        if guards:
            call = self.guarded_insert_call
            params = (*params, [stream for stream, _ in guards], [version for _, version in guards])
        # The pool's connections are in autocommit mode: the one statement is its own transaction, so no BEGIN
        # and COMMIT round trips around it (the function's LOCK is allowed there: it is not a top-level statement).
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            assert conn.autocommit, "the insert must be its own transaction"
            curs.execute(call, params, prepare=True)
            return [row[self.insert_function] for row in curs.fetchall()]

    @retry((InterfaceError, OperationalError), max_attempts=INSERT_ATTEMPTS, wait=INSERT_RETRY_WAIT)
    def _committed_ids(self, stored_events: Sequence[StoredEvent]) -> list[int] | None:
        """The notification ids of ``stored_events`` if every one of them is stored exactly as given (its state
        bytes: an event's id, time and decision make it unique), else None (another writer's events)."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self.select_stored_statement, ([e.originator_id for e in stored_events],
                                                        [e.originator_version for e in stored_events]))
            found = {(row["originator_id"], row["originator_version"]): (bytes(row["state"]), row["notification_id"])
                     for row in curs.fetchall()}
        ids = []
        for event in stored_events:
            state, notification_id = found.get((event.originator_id, event.originator_version), (None, None))
            if state != event.state:
                return None
            ids.append(notification_id)
        return ids


def _stored(row: Any) -> StoredEvent:
    """A stored event from a row of the events table (its state as bytes, as eventsourcing's reads give it)."""
    return StoredEvent(originator_id=row["originator_id"], originator_version=row["originator_version"],
                       topic=row["topic"], state=bytes(row["state"]))

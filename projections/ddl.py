"""Migrations that take no lock on what already exists, and wait for a lock only briefly on what does not.

Every process that starts (``serve``, a worker, an operator's command such as ``projections status``) runs the
schema's statements again, and they are written to be repeatable (``IF NOT EXISTS``). Repeatable is not free:
``CREATE INDEX IF NOT EXISTS`` takes a SHARE lock on its table before it looks for the index, and ``ALTER TABLE``
takes ACCESS EXCLUSIVE before it looks at anything. Against a live database, while a long transaction writes the
table (a projection's rebuild, a deletion of tens of thousands of tokens) or reads it (an audit export), such a
statement waits, and every request that reads or writes the table then queues behind it: one ``projections status``
during a ``token_lookup`` rebuild stalled every bearer request until the rebuild committed.

So each such statement runs only when what it would create, enable or add is missing (``if_missing``; the drop of
a superseded index is tried and, if its table is held, left for a later start), and a
migration transaction waits at most the store's lock timeout for a lock (``lock_timeout``): a migration that really
has something to change on a table a long transaction holds fails with PostgreSQL's lock timeout, rather than holding
the live system up; it is tried again by starting the process again once that transaction is over.
"""

import re
from collections.abc import Sequence

from psycopg.sql import SQL, Composable, Literal

_NAME = r'(?:"[^"]+"|\w+)'
_QUALIFIED = rf"(?:{_NAME}\.)?{_NAME}"
_INDEX = re.compile(rf"\s*CREATE\s+(?:UNIQUE\s+)?INDEX\s+IF\s+NOT\s+EXISTS\s+({_NAME})\s+ON\s+(?:ONLY\s+)?"
                    rf"({_QUALIFIED})\s", re.IGNORECASE)
_ROW_SECURITY = re.compile(rf"\s*ALTER\s+TABLE\s+({_QUALIFIED})\s+ENABLE\s+ROW\s+LEVEL\s+SECURITY\s*;?\s*$",
                           re.IGNORECASE)
_ADD_COLUMN = re.compile(rf"\s*ALTER\s+TABLE\s+({_QUALIFIED})\s+ADD\s+COLUMN\s+IF\s+NOT\s+EXISTS\s+({_NAME})\s",
                         re.IGNORECASE)
_DROP_INDEX = re.compile(rf"\s*DROP\s+INDEX\s+IF\s+EXISTS\s+{_QUALIFIED}\s*;?\s*$", re.IGNORECASE)
_GRANT = re.compile(rf"\s*GRANT\s+SELECT\s+ON\s+({_QUALIFIED})\s+TO\s+({_NAME})\s*;?\s*$", re.IGNORECASE)
_TAG = "$keyledger_ddl$"
MIGRATION_LOCK_KEY = 0x6B6C6467  # "kldg": one advisory lock for keyledger's schema changes (and rebuilds' swaps)


def lock_timeout(seconds: float) -> Composable:
    """The statement that bounds the migration transaction's waits for locks (see the module); 0: no bound, as
    PostgreSQL and eventsourcing read it."""
    bound = f"{max(int(seconds * 1000), 1)}ms" if seconds > 0 else "0"
    return SQL("SET LOCAL lock_timeout = {}").format(Literal(bound))


def if_missing(statement: Composable) -> Composable:
    """``statement`` as a ``DO`` block that runs it only when what it creates, enables or adds is missing, for the
    statements that would otherwise lock their table first (see the module); any other statement unchanged."""
    text = statement.as_string(None)
    if _DROP_INDEX.match(text):
        return _best_effort(text)
    condition = _condition(text)
    if condition is None:
        return statement
    _check_quotable(text)
    return SQL("DO $$ BEGIN IF {} THEN EXECUTE {}; END IF; END $$").format(condition, SQL(f"{_TAG}{text}{_TAG}"))


def _best_effort(text: str) -> Composable:
    """A superseded index's drop, given up when its table's lock is not had within the lock timeout (a long export
    reading the table, say): the index then stays, costing writes only, and the next start tries again."""
    _check_quotable(text)
    return SQL("DO $$ BEGIN EXECUTE {}; EXCEPTION WHEN lock_not_available THEN "
               "RAISE NOTICE 'left for a later start: %', {}; END $$").format(SQL(f"{_TAG}{text}{_TAG}"),
                                                                            SQL(f"{_TAG}{text}{_TAG}"))


def _check_quotable(text: str) -> None:
    if _TAG in text or "$$" in text:
        raise ValueError(f"a migration statement may not contain $$ or {_TAG}: {text}")


def repeatable(statements: Sequence[Composable], lock_seconds: float) -> list[Composable]:
    """A recorder's migration statements as every start runs them: ``if_missing`` of each, after the transaction's
    ``lock_timeout``."""
    return [lock_timeout(lock_seconds), *(if_missing(statement) for statement in statements)]


def _condition(text: str) -> Composable | None:
    """The SQL condition under which ``text`` has something to do, or None if it takes no lock worth avoiding."""
    if match := _INDEX.match(text):
        index, table = match.groups()
        schema = _schema_of(table)
        return SQL("to_regclass({}) IS NULL").format(Literal(f"{schema}.{index}" if schema else index))
    if match := _ROW_SECURITY.match(text):
        return SQL("NOT coalesce((SELECT relrowsecurity FROM pg_class WHERE oid = to_regclass({})), false)").format(
            Literal(match.group(1)))
    if match := _GRANT.match(text):  # a grant writes the table's catalogue row: a swap's drop would fail on it
        table, role = match.groups()
        return SQL("NOT coalesce(has_table_privilege({}, to_regclass({}), 'SELECT'), false)").format(
            Literal(_unquoted(role)), Literal(table))
    if match := _ADD_COLUMN.match(text):
        table, column = match.groups()
        return SQL("NOT EXISTS (SELECT FROM pg_attribute WHERE attrelid = to_regclass({}) AND attname = {} "
                   "AND NOT attisdropped)").format(Literal(table), Literal(_unquoted(column)))
    return None


def _schema_of(qualified: str) -> str | None:
    """The schema part of a qualified name as written (quoted or not), or None: an index lives in its table's."""
    match = re.fullmatch(rf"({_NAME})\.{_NAME}", qualified)
    return match.group(1) if match else None


def _unquoted(name: str) -> str:
    return name[1:-1].replace('""', '"') if name.startswith('"') else name.lower()

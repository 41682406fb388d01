"""Events are stamped by the clock the process binds (``domain.entity``), the database's in a server, not by the
host's clock eventsourcing would read."""

import importlib
import inspect
import pkgutil
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from eventsourcing.domain import Aggregate

import domain
from domain import entity
from domain.entity import Entity, stamp_with
from domain.project import Project
from domain.scopes import Role
from domain.token import Token, TokenKind

DAY_ONE = datetime(2030, 1, 1, tzinfo=UTC)
DAY_TWO = DAY_ONE + timedelta(days=1)


def at(moment: datetime) -> entity.Source:
    return lambda: moment


def stamps() -> list[datetime]:
    """The timestamps of a new aggregate's events: its creation and one change."""
    project = Project(project_id=uuid4(), name="acme", owner_id=uuid4(), actor="system")
    project.add_member(user_id=uuid4(), role=Role.ADMIN, actor="system")
    return [e.timestamp for e in project.collect_events()]


@pytest.fixture(autouse=True)
def nothing_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever containers other tests of this process left open, these tests start with no clock bound."""
    monkeypatch.setattr(entity, "_bound", ())


def test_a_bound_clock_stamps_every_event_of_an_aggregate() -> None:
    stamping = stamp_with(at(DAY_ONE))
    try:
        assert stamps() == [DAY_ONE, DAY_ONE]
    finally:
        stamping.close()


def test_the_newest_open_binding_stamps_and_closing_it_restores_the_one_before() -> None:
    first = stamp_with(at(DAY_ONE))
    second = stamp_with(at(DAY_TWO))
    assert stamps() == [DAY_TWO, DAY_TWO]
    second.close()
    assert stamps() == [DAY_ONE, DAY_ONE]
    second.close()  # again: harmless
    assert stamps() == [DAY_ONE, DAY_ONE]
    first.close()


def test_bindings_closed_out_of_order_leave_the_open_one_stamping() -> None:
    first = stamp_with(at(DAY_ONE))
    second = stamp_with(at(DAY_TWO))
    first.close()
    assert stamps() == [DAY_TWO, DAY_TWO]
    second.close()


def test_with_nothing_bound_the_hosts_clock_stamps() -> None:
    stamping = stamp_with(at(DAY_ONE))
    stamping.close()
    before = datetime.now(UTC)
    stamped = stamps()
    after = datetime.now(UTC)
    assert all(before <= moment <= after for moment in stamped)


def test_revocations_and_expiries_built_without_the_event_decorator_are_stamped_too() -> None:
    """``Token.revocation``, ``Token.revocation_of_issued`` and ``Token.expiry_of_issued`` make their events
    directly, for speed: they must still take the bound clock."""
    issued = Token(token_id=uuid4(), kind=TokenKind.ACCESS, project_id=uuid4(), client_id="klc_a", user_id=None,
                   scope="tokens:read", grant_type="client_credentials", issued_at=DAY_ONE,
                   expires_at=DAY_ONE + timedelta(minutes=15), family_id=None, parent_id=None, actor="client:klc_a",
                   family_expires_at=None, value_hash=None, account_version=None)
    [issuance] = issued.collect_events()
    stamping = stamp_with(at(DAY_TWO))
    try:
        revoked = issued.revocation(reason="revoked by client", actor="client:klc_a", revocation_id=uuid4())
        expired = Token.expiry_of_issued(token_id=issued.id, project_id=issued.project_id, client_id="klc_a",
                                         kind="access", expires_at=issued.expires_at, now=DAY_TWO, actor="system")
        of_issued = Token.revocation_of_issued(issuance, now=DAY_ONE, reason="revoked by client",
                                               actor="client:klc_a")
        assert (revoked.timestamp, expired.timestamp, of_issued.timestamp) == (DAY_TWO, DAY_TWO, DAY_TWO)
    finally:
        stamping.close()


def test_every_aggregate_of_the_domain_is_an_entity() -> None:
    """An aggregate on eventsourcing's own base would stamp its events by the host's clock."""
    aggregates = []
    for module_info in pkgutil.iter_modules(domain.__path__):
        module = importlib.import_module(f"domain.{module_info.name}")
        aggregates += [cls for _, cls in inspect.getmembers(module, inspect.isclass)
                       if issubclass(cls, Aggregate) and cls.__module__ == module.__name__ and cls is not Entity]
    assert len(aggregates) >= 7  # Client, KeyRing, Project, Refusal, Token, User, EmailIndex
    assert [cls.__name__ for cls in aggregates if not issubclass(cls, Entity)] == []

"""ProjectSnapshots: a project copy is served only at exactly the version the request saw."""

from copy import deepcopy
from uuid import uuid4

from domain.project import Project
from domain.scopes import Role
from infrastructure.http.gate import ProjectSnapshots


def project() -> Project:
    return Project(project_id=uuid4(), name="Acme", owner_id=uuid4(), actor="system")

def test_a_copy_is_served_only_at_its_version() -> None:
    snapshots, p = ProjectSnapshots(), project()
    snapshots.put(p)
    assert snapshots.get(p.id, p.version) is p
    assert snapshots.get(p.id, p.version + 1) is None  # the stream moved on: the caller must load it
    assert snapshots.get(uuid4(), 1) is None

def test_an_older_copy_never_replaces_a_newer_one() -> None:

    snapshots, p = ProjectSnapshots(), project()
    old = deepcopy(p)
    p.add_member(user_id=uuid4(), role=Role.ADMIN, actor="system")
    snapshots.put(p)
    snapshots.put(old)
    assert snapshots.get(p.id, p.version) is p
    assert snapshots.get(p.id, old.version) is None

def test_capacity_evicts_the_least_recently_used() -> None:
    snapshots = ProjectSnapshots(capacity=2)
    a, b, c = project(), project(), project()
    snapshots.put(a)
    snapshots.put(b)
    assert snapshots.get(a.id, a.version) is a  # a is now the most recent
    snapshots.put(c)
    assert snapshots.get(b.id, b.version) is None
    assert snapshots.get(a.id, a.version) is a and snapshots.get(c.id, c.version) is c

"""Unique email under concurrency: the email index's (originator_id, version) constraint decides, atomically."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from application.accounts import SignedUp, SignUp
from domain.errors import Conflict
from domain.ids import email_index_id, normalize_email
from domain.user import EmailIndex
from infrastructure.bootstrap import Container
from tests.integration.support import PASSWORD, fresh_email, head, notifications, state

pytestmark = pytest.mark.integration

CALLERS = 20


def variants(email: str, count: int) -> list[str]:
    """The same address spelled ``count`` ways (case and surrounding whitespace)."""
    local, domain = email.split("@")
    spellings = []
    for i in range(count):
        cased = "".join(c.upper() if (i >> (k % 4)) & 1 else c for k, c in enumerate(local))
        spellings.append(" " * (i % 3) + f"{cased}@{domain.upper() if i % 2 else domain}" + "\t" * (i % 2))
    return spellings


def test_concurrent_sign_ups_with_one_email_admit_exactly_one(container: Container) -> None:
    email = fresh_email("race")
    spellings = variants(email, CALLERS)
    assert len(set(spellings)) == CALLERS and {normalize_email(s) for s in spellings} == {email}
    before = head(container)
    barrier = threading.Barrier(CALLERS)

    def attempt(spelling: str) -> SignedUp | Exception:
        barrier.wait(timeout=30)
        try:
            return container.accounts.sign_up(SignUp(email=spelling, password=PASSWORD, project_name="Race"))
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(max_workers=CALLERS) as pool:
        outcomes = list(pool.map(attempt, spellings))

    winners = [o for o in outcomes if isinstance(o, SignedUp)]
    losers = [o for o in outcomes if isinstance(o, Exception)]
    assert len(winners) == 1, f"{len(winners)} sign-ups succeeded"
    assert all(isinstance(o, Conflict) for o in losers), [repr(o) for o in losers if not isinstance(o, Conflict)]
    assert len(losers) == CALLERS - 1

    registered = [n for n in notifications(container, after=before)
                  if n.topic.endswith("User.UserRegistered") and normalize_email(state(n)["email"]) == email]
    assert [n.originator_id for n in registered] == [winners[0].user.id]
    index = container.app.load(email_index_id(email), EmailIndex)
    assert index.user_id == winners[0].user.id
    assert len(container.app.recorder.select_events(email_index_id(email))) == 1
    # The losers' projects and clients were not written either: one ProjectCreated for this race.
    created = [n for n in notifications(container, after=before) if n.topic.endswith("Project.ProjectCreated")
               and n.originator_id != winners[0].project.id and state(n)["name"] == "Race"]
    assert created == []

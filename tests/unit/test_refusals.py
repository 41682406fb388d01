"""TokenRequestRefused on the in-memory store: every kind of refused token request is recorded with its reason and
what was known (client, user, project, token, source, user agent), never a presented secret; 429s are not
recorded, and the refusals the abuse limits do not count are recorded up to the address limit per window."""

from collections.abc import Iterator
from typing import Any

import pytest

from application.accounts import CreateClient, SignedUp
from application.oauth.errors import OAuthError
from application.oauth.grants import TokenRequest
from application.oauth.limits import AttemptLimits
from domain.client import Client
from domain.refusal import Refusal
from domain.user import User
from tests.unit.conftest import PASSWORD, World, build_world

EMAIL = "ada@example.test"
SOURCE = "192.0.2.9"


@pytest.fixture
def world() -> Iterator[World]:
    built = build_world(limits=AttemptLimits(per_account=3, per_client=3, per_address=5))
    yield built
    built.app.close()


@pytest.fixture
def ada(world: World) -> SignedUp:
    return world.sign_up(EMAIL)


def refusals(world: World, after: int = 0) -> list[Any]:
    events = (world.app.mapper.to_domain_event(n)
              for n in world.app.recorder.select_notifications(start=after + 1, limit=10**6))
    return [e for e in events if isinstance(e, Refusal.TokenRequestRefused)]


def refuse(world: World, **fields: Any) -> OAuthError:
    request = TokenRequest(**{"source": SOURCE, "user_agent": "unit/1", **fields})
    with pytest.raises(OAuthError) as refused:
        world.tokens.handle(request)
    return refused.value


def recorded(world: World, **fields: Any) -> Any:
    before = world.position()
    refuse(world, **fields)
    (event,) = refusals(world, before)
    return event


def cc(account: SignedUp, **fields: Any) -> dict[str, Any]:
    return {"grant_type": "client_credentials", "client_id": account.client.client.client_id,
            "client_secret": account.client.client_secret, **fields}


def test_a_wrong_secret_is_recorded_in_the_clients_project_without_the_secret(world: World, ada: SignedUp) -> None:
    wrong = world.minter.client_secret()
    event = recorded(world, **cc(ada, client_secret=wrong))
    assert (event.reason, event.error, event.grant_type) == ("client_secret_wrong", "invalid_client",
                                                             "client_credentials")
    assert event.project_id == ada.project.id and event.client_id == ada.client.client.client_id
    assert (event.source, event.user_agent, event.actor) == (SOURCE, "unit/1", "system")
    assert wrong not in repr(vars(event))


@pytest.mark.parametrize(("fields", "reason"), [
    ({"client_secret": None}, "client_authentication_missing"),
    ({"client_secret": "klcs_short"}, "client_secret_malformed"),
    ({"scope": "nonsense:scope"}, "invalid_scope"),
    ({"scope": "members:write"}, "invalid_scope"),
    ({"grant_type": "password"}, "grant_not_allowed"),
    ({"grant_type": "urn:made:up"}, "unsupported_grant_type"),
])
def test_each_client_refusal_has_its_reason(world: World, ada: SignedUp, fields: dict[str, Any], reason: str) -> None:
    event = recorded(world, **cc(ada, **fields))
    assert event.reason == reason
    assert event.project_id == ada.project.id


def test_an_unknown_client_is_platform_level_and_a_secret_in_client_id_is_not_recorded(world: World) -> None:
    nobody = world.minter.client_id()  # a client id's shape, registered by no one
    unknown = recorded(world, grant_type="client_credentials", client_id=nobody,
                       client_secret=world.minter.client_secret())
    assert (unknown.reason, unknown.project_id, unknown.client_id) == ("client_unknown", None, nobody)
    pasted = world.minter.client_secret()
    misplaced = recorded(world, grant_type="client_credentials", client_id=pasted, client_secret=pasted)
    assert misplaced.client_id == "[unrecognised]" and pasted not in repr(vars(misplaced))


def _damaged(secret: str) -> list[str]:
    """A secret as an integrator might paste it into the wrong field: a character cut, a full stop added, one changed
    (each fails the checksum, yet the checksum is public: each gives the secret away)."""
    changed = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    prefix = secret[:5]  # klcs_ or klrt_
    return [secret[:-1], secret + ".", changed, secret.upper(), "x" + secret, secret.replace("klcs_", "klc_"),
            secret.replace("_", ""), secret.replace("_", "-"), secret.replace("_", "."), secret[len(prefix):],
            "klc_" + secret[len(prefix):]]


def test_a_damaged_secret_or_refresh_token_in_client_id_or_grant_type_is_not_recorded(world: World,
                                                                                     ada: SignedUp) -> None:
    sources = (f"198.51.100.{n}" for n in range(1, 255))  # each its own address: none reaches the address limit
    for secret in (ada.client.client_secret, world.minter.refresh_token()):
        for pasted in _damaged(secret):
            misplaced = recorded(world, grant_type="client_credentials", client_id=pasted, client_secret="x",
                                 source=next(sources))
            assert misplaced.client_id == "[unrecognised]", pasted
            garbled = recorded(world, grant_type=pasted, client_id="dashboard", source=next(sources))
            assert garbled.grant_type == "[unrecognised]", pasted
            assert secret[5:30] not in repr(vars(misplaced)) + repr(vars(garbled))


@pytest.mark.parametrize("grant_type", ["password", "authorization_code",
                                        "urn:ietf:params:oauth:grant-type:jwt-bearer"])
def test_a_known_or_standard_grant_type_is_recorded_as_sent(world: World, grant_type: str) -> None:
    assert recorded(world, grant_type=grant_type, client_id="dashboard").grant_type == grant_type


def test_a_client_id_of_a_client_ids_shape_is_recorded_registered_or_not(world: World) -> None:
    shaped = "klc_" + "a1" * 11
    assert recorded(world, grant_type="client_credentials", client_id=shaped, client_secret="x").client_id == shaped


@pytest.mark.parametrize("typed", ["correct-horse-battery", "Hunter2.staple", "ada@example.test", "klc_", "klc_a.b",
                                   "klc_" + "a" * 21, "klc_" + "a" * 23, "klc_nobody"])
def test_a_client_id_without_a_client_ids_shape_is_not_recorded(world: World, typed: str) -> None:
    # A password typed into the client_id field is a plain identifier too: only a client id's shape is kept.
    refused = recorded(world, grant_type="client_credentials", client_id=typed, client_secret="x")
    assert refused.client_id == "[unrecognised]"
    assert typed not in repr(vars(refused))


def test_revoked_clients_and_expired_secrets_are_told_apart(world: World, ada: SignedUp) -> None:
    made = world.accounts.new_client(CreateClient(project_id=ada.project.id, name="short", actor="system",
                                                  secret_ttl=60))
    world.app.save(made.client)
    world.clock.advance(seconds=61)
    expired = recorded(world, grant_type="client_credentials", client_id=made.client.client_id,
                       client_secret=made.client_secret)
    assert expired.reason == "client_secret_expired"
    client = world.app.load(Client.create_id(ada.client.client.client_id), Client)
    client.revoke(actor="system")
    world.app.save(client)
    assert recorded(world, **cc(ada)).reason == "client_revoked"


def test_password_refusals_name_the_user_when_known_never_the_email_or_password(world: World, ada: SignedUp) -> None:
    wrong = recorded(world, grant_type="password", client_id="dashboard", username=EMAIL, password="x" + PASSWORD)
    assert (wrong.reason, wrong.user_id, wrong.project_id, wrong.client_id) == ("password_wrong", ada.user.id,
                                                                                 None, "dashboard")
    unknown = recorded(world, grant_type="password", client_id="dashboard", username="who@example.test",
                       password=PASSWORD)
    assert (unknown.reason, unknown.user_id) == ("user_unknown", None)
    assert "who@example.test" not in repr(vars(unknown)) and PASSWORD not in repr(vars(unknown))
    user = world.app.load(ada.user.id, User)
    user.disable(actor="system")
    world.app.save(user)
    assert recorded(world, grant_type="password", client_id="dashboard", username=EMAIL,
                    password=PASSWORD).reason == "user_disabled"


def test_refresh_refusals_name_the_token_concerned(world: World, ada: SignedUp) -> None:
    login = world.tokens.handle(TokenRequest(grant_type="password", client_id="dashboard", username=EMAIL,
                                             password=PASSWORD))
    assert login.refresh_token
    world.tokens.handle(TokenRequest(grant_type="refresh_token", client_id="dashboard",
                                     refresh_token=login.refresh_token))
    reused = recorded(world, grant_type="refresh_token", client_id="dashboard", refresh_token=login.refresh_token)
    assert reused.reason == "refresh_token_reused" and reused.user_id == ada.user.id
    assert reused.token_id == login.aggregates[1].id
    assert recorded(world, grant_type="refresh_token", client_id="dashboard",
                    refresh_token="klrt_nonsense").reason == "refresh_token_malformed"
    assert recorded(world, grant_type="refresh_token", client_id="dashboard",
                    refresh_token=world.minter.refresh_token()).reason == "refresh_token_unknown"


def test_a_429_is_not_recorded(world: World, ada: SignedUp) -> None:
    for _ in range(3):
        refuse(world, grant_type="password", client_id="dashboard", username=EMAIL, password="wrong password!")
    before = world.position()
    locked = refuse(world, grant_type="password", client_id="dashboard", username=EMAIL, password=PASSWORD)
    assert locked.status_code == 429
    assert world.position() == before


def test_unlimited_refusals_are_recorded_up_to_the_address_limit_per_window(world: World, ada: SignedUp) -> None:
    before = world.position()
    for _ in range(8):
        refuse(world, grant_type="urn:made:up", client_id="dashboard")
    assert len(refusals(world, before)) == 5  # per_address
    # They are still answered, and nothing else is locked: the right password still works from that address.
    assert world.tokens.handle(TokenRequest(grant_type="password", client_id="dashboard", username=EMAIL,
                                            password=PASSWORD, source=SOURCE)).access_token
    world.clock.advance(seconds=AttemptLimits().lockout + 1)
    refuse(world, grant_type="urn:made:up", client_id="dashboard")
    assert len(refusals(world, before)) == 6


def test_failed_authentications_of_one_client_from_many_addresses_are_recorded_up_to_the_limit(
        world: World, ada: SignedUp) -> None:
    """Each address is locked out of the client on its own, so many addresses could each fail at it; the client's
    project's ledger records at most the address limit of them per window, one at a time or in a batch. All are
    answered, and none locks the client for its own integration."""
    wrong = world.minter.client_secret()
    before = world.position()
    for i in range(4):
        error = refuse(world, **cc(ada, client_secret=wrong, source=f"198.51.100.{i}"))
        assert error.error == "invalid_client"
    batch = world.tokens.decide_batch([TokenRequest(**cc(ada, client_secret=wrong), source=f"203.0.113.{i}")
                                       for i in range(4)])
    assert all(isinstance(o, OAuthError) and o.error == "invalid_client" for o in batch)
    assert len(refusals(world, before)) + sum(len(o.aggregates) for o in batch) == 5  # per_address
    assert world.tokens.handle(TokenRequest(**cc(ada), source=SOURCE)).access_token


def test_a_batch_saves_its_refusals_with_its_tokens(world: World, ada: SignedUp) -> None:
    wrong = TokenRequest(**cc(ada, client_secret=world.minter.client_secret()), source=SOURCE)
    outcomes = world.tokens.decide_batch([TokenRequest(**cc(ada)), wrong])
    issued, refused = outcomes
    assert isinstance(refused, OAuthError) and len(refused.aggregates) == 1
    assert not isinstance(issued, OAuthError)
    event = refused.aggregates[0].pending_events[0]  # type: ignore[attr-defined]
    assert event.reason == "client_secret_wrong"


"""The audit API over HTTP: an auditor follows one token's whole life (issue, refreshes, reuse, revocation, each
with its actor) in order, filters by client, user, type and time, pages with a cursor, exports NDJSON and CSV, sees
refusals, never another project's entries, and bad filters are 400 problems."""

import base64
import csv
import io
import json
import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import client_login, refresh_login
from tests.e2e.support import Team, bearer, login, make_team

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def team(live_server: str) -> Team:
    return make_team(httpx.Client(base_url=live_server, timeout=30), "auditor")


def jti(token: str) -> str:
    payload = token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["jti"])


def entries(team: Team, token: str | None = None, **params: Any) -> list[dict[str, Any]]:
    """Every entry matching ``params``, all pages."""
    found: list[dict[str, Any]] = []
    query = {"limit": 200, **params}
    while True:
        page = team.http.get(team.url("/audit"), params=query, headers=bearer(token or team.member_token))
        assert page.status_code == 200, page.text
        found += page.json()["items"]
        if page.json()["next_cursor"] is None:
            return found
        query["cursor"] = page.json()["next_cursor"]


def test_an_auditor_follows_a_client_token_from_issue_to_revocation(team: Team) -> None:
    client = team.new_client()
    token = team.http.post("/oauth2/token", data={"grant_type": "client_credentials"},
                           auth=(client["client_id"], client["client_secret"])).json()["access_token"]
    revoked = team.http.post(team.url("/tokens/revoke"), json={"token_id": jti(token)},
                             headers=bearer(team.owner_token))
    assert revoked.json() == {"revoked": 1}
    # Read-your-writes: the revocation is in the ledger the moment it was acknowledged.
    history = entries(team, token_id=jti(token))
    assert [e["type"] for e in history] == ["TokenIssued", "TokenRevoked"]
    issued, ended = history
    assert issued["actor"] == {"kind": "client", "id": client["client_id"]}
    assert ended["actor"] == {"kind": "user", "id": team.owner["user"]["id"]}
    assert ended["data"]["reason"] == "revoked by project administrator" and ended["data"]["revocation_id"]
    assert issued["client_id"] == ended["client_id"] == client["client_id"]
    assert issued["position"] < ended["position"] and all(e["project_id"] == team.project for e in history)


def test_an_auditor_follows_a_members_login_through_rotation_reuse_and_family_revocation(team: Team) -> None:
    first = login_pair(team)
    second = refresh_login(team.http, first["refresh_token"]).json()
    assert refresh_login(team.http, first["refresh_token"]).status_code == 400  # reuse: the family is revoked
    access = entries(team, token_id=jti(first["access_token"]))
    family = access[0]["data"]["family_id"]
    assert access[0]["user_id"] == team.owner["user"]["id"] and access[0]["client_id"] == "dashboard"
    root = entries(team, token_id=family)
    assert [e["type"] for e in root] == ["TokenIssued", "TokenRefreshed", "RefreshTokenReuseDetected",
                                         "TokenRequestRefused"]
    assert root[0]["data"]["parent_id"] is None and root[0]["data"]["kind"] == "refresh"
    child_id = root[1]["data"]["refresh_id"]
    child = entries(team, token_id=child_id)
    assert [e["type"] for e in child] == ["TokenIssued", "TokenRevoked"]
    assert child[0]["data"]["parent_id"] == family and child[0]["data"]["family_id"] == family
    assert child[1]["actor"] == {"kind": "system", "id": None}
    assert child[1]["data"]["reason"] == "refresh token reuse detected"
    rotated_access = entries(team, token_id=jti(second["access_token"]))
    assert rotated_access[0]["data"]["parent_id"] == family
    assert rotated_access[-1]["type"] == "TokenRevoked"
    assert rotated_access[-1]["data"]["revocation_id"] == child[1]["data"]["revocation_id"]  # one bulk revocation


def login_pair(team: Team) -> dict[str, Any]:
    response = team.http.post("/oauth2/token", data={
        "grant_type": "password", "client_id": "dashboard", "username": team.owner["user"]["email"],
        "password": team.owner["password"]})
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_refusals_are_in_the_ledger_with_reason_source_and_agent(team: Team) -> None:
    client = team.new_client()
    refused = team.http.post("/oauth2/token", data={"grant_type": "client_credentials"},
                             auth=(client["client_id"], client["client_secret"][:-4] + "AAAA"),
                             headers={"User-Agent": "audit-e2e/2"})
    assert refused.status_code == 401
    (entry,) = entries(team, client_id=client["client_id"], type="TokenRequestRefused")
    assert entry["data"]["reason"] in ("client_secret_wrong", "client_secret_malformed")
    assert entry["data"]["error"] == "invalid_client" and entry["data"]["grant_type"] == "client_credentials"
    assert entry["data"]["source"] == "127.0.0.1" and entry["data"]["user_agent"] == "audit-e2e/2"
    assert client["client_secret"][:-4] not in json.dumps(entry)


def test_a_members_refused_login_reaches_the_projects_ledger_without_where_it_came_from(team: Team) -> None:
    """Adding someone needs only their e-mail: the project's auditors see the refusals on their account (a member's
    credential events), but not the address and device of whoever tried (the platform's entry keeps those)."""
    stranger = team.new_user()
    assert team.add(stranger, "developer").status_code == 201
    refused = team.http.post("/oauth2/token", data={
        "grant_type": "password", "client_id": "dashboard", "username": stranger["user"]["email"],
        "password": stranger["password"] + "-wrong"}, headers={"User-Agent": "audit-e2e/3"})
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    (entry,) = entries(team, user_id=stranger["user"]["id"], type="TokenRequestRefused")
    assert entry["project_id"] == team.project and entry["data"]["reason"] == "password_wrong"
    assert "source" not in entry["data"] and "user_agent" not in entry["data"]
    assert "audit-e2e/3" not in json.dumps(entry) and "127.0.0.1" not in json.dumps(entry)


def test_filters_combine_and_pages_cover_the_range_in_position_order(team: Team) -> None:
    client = team.new_client()
    for _ in range(3):
        assert client_login(team.http, {"client": client}).status_code == 200
    everything = entries(team)
    positions = [e["position"] for e in everything]
    assert positions == sorted(set(positions))
    small_pages = entries(team, limit=2)
    assert small_pages == everything
    mine = entries(team, client_id=client["client_id"])
    assert [e["type"] for e in mine] == ["ClientCreated", "TokenIssued", "TokenIssued", "TokenIssued"]
    both = entries(team, client_id=client["client_id"], type=["ClientCreated", "TokenRevoked"])
    assert [e["type"] for e in both] == ["ClientCreated"]
    owner = entries(team, user_id=team.owner["user"]["id"], type="ProjectCreated")
    assert len(owner) == 1
    middle = mine[2]["occurred_at"]
    assert entries(team, client_id=client["client_id"], since=middle) == [e for e in mine
                                                                          if e["occurred_at"] >= middle]
    assert entries(team, client_id=client["client_id"], until=middle) == [e for e in mine
                                                                          if e["occurred_at"] < middle]


def test_ndjson_and_csv_exports_stream_the_filtered_range(team: Team) -> None:
    pages = entries(team)
    with team.http.stream("GET", team.url("/audit"), headers={**bearer(team.member_token),
                                                              "Accept": "application/x-ndjson"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert [(e["position"], e["type"], e["hash"]) for e in lines] == [(e["position"], e["type"], e["hash"])
                                                                      for e in pages]
    assert lines[0] == pages[0]
    response = team.http.get(team.url("/audit"), params={"type": "TokenIssued"},
                             headers={**bearer(team.member_token), "Accept": "text/csv"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [int(r["position"]) for r in rows] == [e["position"] for e in pages if e["type"] == "TokenIssued"]
    assert {r["type"] for r in rows} == {"TokenIssued"}


@pytest.mark.parametrize("params", [
    {"cursor": "not-a-cursor"}, {"cursor": base64.urlsafe_b64encode(b"2026-01-01T00:00:00+00:00|x").decode()},
    {"type": "Token Issued"}, {"type": "x" * 70}, {"token_id": "nope"}, {"user_id": "1"}, {"since": "yesterday"},
    {"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, {"limit": "0"}, {"limit": "100000"},
    {"client_id": "klc_\x00"}, {"client_id": "a b"}, {"type": "Token\x00"}, {"cursor": "\x00"},
])
def test_bad_filters_are_400_problems(team: Team, params: dict[str, str]) -> None:
    response = team.http.get(team.url("/audit"), params=params, headers=bearer(team.member_token))
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


def test_another_projects_ledger_is_404_and_never_mixed_in(live_server: str, team: Team) -> None:
    other = make_team(team.http, "auditor")
    assert client_login(team.http, other.owner).status_code == 200
    theirs = {e["position"] for e in entries(other)}
    ours = {e["position"] for e in entries(team)}
    # Only the platform-level events of a person in both projects could appear twice: none here.
    assert theirs and ours and not theirs & ours
    assert all(e["project_id"] == team.project for e in entries(team))
    for token in (team.member_token, team.owner_token, client_login(team.http, team.owner).json()["access_token"]):
        response = team.http.get(other.url("/audit"), headers=bearer(token))
        assert response.status_code == 404, response.text
        streamed = team.http.get(other.url("/audit"), headers={**bearer(token), "Accept": "application/x-ndjson"})
        assert streamed.status_code == 404
    assert team.http.get(f"/v1/projects/{uuid.uuid4()}/audit", headers=bearer(team.owner_token)).status_code == 404


def test_a_developer_gets_403_and_an_owner_reads_the_ledger(team: Team) -> None:
    developer = make_team(team.http, "developer")
    denied = developer.http.get(developer.url("/audit"), headers=bearer(developer.member_token))
    assert denied.status_code == 403
    assert entries(developer, token=developer.owner_token)
    owner_login = login(team.http, team.owner)
    assert entries(team, token=owner_login) == entries(team)[: len(entries(team, token=owner_login))]

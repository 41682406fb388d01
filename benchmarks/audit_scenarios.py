"""Audit ledger scenarios, against a history loaded by ``python -m benchmarks seed-audit``.

Both read project 0 of the seeded history as its owner (``audit-owner-0@bench.keyledger.test``): ``audit_page``
sends a mix of filtered pages (first page, by type, by client, by user, by token, a one-day window, a deep cursor);
``audit_export`` streams a ten-day window as NDJSON (setup prints how many entries that is and the rate of one
export measured alone).
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from benchmarks.fixtures import Account, SetupContext, SetupError
from benchmarks.httpclient import build_request
from benchmarks.scenarios import Plan, scenario
from benchmarks.seed_audit import BENCH_PASSWORD, OWNER_EMAIL

_PAGE = 50
_EXPORT_DAYS = 10
_TOKEN_MARGIN = 30.0


async def _seeded_project(ctx: SetupContext) -> tuple[str, dict[str, str]]:
    """The seeded project 0 and its owner's bearer header."""
    owner = Account(email=OWNER_EMAIL.format(0), password=BENCH_PASSWORD, user_id="", project_id="", client_id="",
                    client_secret="")
    try:
        token = await ctx.fresh_password_tokens(owner)
    except SetupError as exc:
        raise SetupError(f"no seeded audit history (run python -m benchmarks seed-audit first): {exc}") from exc
    if ctx.window + _TOKEN_MARGIN > float(token.get("expires_in", 900)):
        raise SetupError("warm-up + duration must stay 30 s below the owner's access-token lifetime")
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    me = await ctx.call_json("GET", "/v1/me", 200, headers)
    owned = [m["project_id"] for m in me.get("memberships", []) if m.get("role") == "owner"]
    if not owned:
        raise SetupError("the seeded owner owns no project")
    return str(owned[0]), headers


async def _items(ctx: SetupContext, path: str, headers: dict[str, str], **query: Any) -> dict[str, Any]:
    return await ctx.call_json("GET", f"{path}?{urlencode(query, doseq=True)}", 200, headers)


async def _span(ctx: SetupContext, path: str, headers: dict[str, str]) -> tuple[datetime, datetime]:
    """When the project's history starts (its first entry) and now (the seeder's history ends when it ran)."""
    first = (await _items(ctx, path, headers, limit=1))["items"]
    if not first:
        raise SetupError("the seeded project has no audit entries")
    return datetime.fromisoformat(first[0]["occurred_at"]), datetime.now().astimezone()


@scenario("audit_page")
async def audit_page(ctx: SetupContext) -> Plan:
    """``GET /v1/projects/{id}/audit?limit=50`` with each kind of filter, on the seeded history."""
    project, headers = await _seeded_project(ctx)
    path = f"/v1/projects/{project}/audit"
    start, end = await _span(ctx, path, headers)
    middle = start + (end - start) / 2
    issued = (await _items(ctx, path, headers, limit=50, type="TokenIssued", since=middle.isoformat()))["items"]
    members = (await _items(ctx, path, headers, limit=50, type="MemberAdded"))["items"]
    deep_since = (start + (end - start) * 0.7).isoformat()
    deep = await _items(ctx, path, headers, limit=_PAGE, since=deep_since)
    if not issued or not members or not deep["next_cursor"]:
        raise SetupError("the seeded project lacks tokens or members")
    client = next(i["client_id"] for i in issued if i["client_id"] != "dashboard")
    queries: list[dict[str, Any]] = [
        {}, {"type": "TokenRevoked"}, {"type": ["TokenRequestRefused", "TokenRevoked"]}, {"client_id": client},
        {"user_id": members[-1]["user_id"]}, {"token_id": issued[0]["token_id"]},
        {"since": middle.isoformat(), "until": (middle + timedelta(days=1)).isoformat()},
        {"since": deep_since, "cursor": deep["next_cursor"]},  # a cursor is sent with the filters that gave it
        {"type": "TokenIssued", "since": (end - timedelta(days=2)).isoformat()},
    ]
    requests = tuple(build_request(ctx.target, "GET", f"{path}?{urlencode({'limit': _PAGE, **q}, doseq=True)}",
                                   headers) for q in queries)
    return Plan(requests, expect_in_body=(b'"items"', b'"next_cursor"'), status=200)


@scenario("audit_export")
async def audit_export(ctx: SetupContext) -> Plan:
    """``GET /v1/projects/{id}/audit`` with ``Accept: application/x-ndjson`` over a ten-day window."""
    project, headers = await _seeded_project(ctx)
    path = f"/v1/projects/{project}/audit"
    start, end = await _span(ctx, path, headers)
    since = start + (end - start) / 3
    query = urlencode({"since": since.isoformat(), "until": (since + timedelta(days=_EXPORT_DAYS)).isoformat()})
    export = {**headers, "Accept": "application/x-ndjson"}
    began = time.perf_counter()
    status, body = await ctx.call("GET", f"{path}?{query}", export)
    took = time.perf_counter() - began
    if status != 200:
        raise SetupError(f"export answered {status}: {body[:200]!r}")
    entries = body.count(b"\n")
    json.loads(body[: body.index(b"\n")])
    print(f"audit_export: {entries:,} entries per export ({len(body) / 1e6:.1f} MB); one export alone took "
          f"{took:.2f} s = {entries / took:,.0f} entries/s", file=ctx.progress)
    return Plan((build_request(ctx.target, "GET", f"{path}?{query}", export),), status=200,
                expect_in_body=(b'"position"',))

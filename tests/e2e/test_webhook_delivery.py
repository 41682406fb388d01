"""Deliveries end to end: a live ``keyledger serve``, a ``keyledger worker`` and a ``keyledger scheduler`` (all real
processes) deliver signed notifications to a real HTTP receiver; a refused first attempt is retried with the same
``webhook-id``, and ``GET .../deliveries`` shows every attempt."""

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import SECRET_KEY, bearer, fresh_database, signup, start_server, stop_server, wait_until_up
from tests.e2e.support import login
from tests.receiver import Receiver, serve

pytestmark = pytest.mark.e2e


def eventually(check: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError("condition not reached in time")


@pytest.fixture(scope="module")
def deployment(server_url: str, redis_url: str) -> Iterator[str]:
    """An API server, a worker and a scheduler on a database of their own, allowed to call 127.0.0.1."""
    with fresh_database(server_url) as url:
        env = {"KEYLEDGER_DATABASE_URL": url, "KEYLEDGER_REDIS_URL": redis_url, "KEYLEDGER_SECRET_KEY": SECRET_KEY,
               "KEYLEDGER_WEBHOOK_ALLOW_PRIVATE": "true", "KEYLEDGER_WEBHOOK_LEASE": "5"}
        server, api = start_server(env)
        processes = [server]
        try:
            wait_until_up(api, server)
            for command in (["worker", "--threads", "2"], ["scheduler", "--tick", "0.2"]):
                processes.append(subprocess.Popen([sys.executable, "-m", "infrastructure.cli", *command],
                                                  env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                                                  stderr=subprocess.DEVNULL))
            yield api
        finally:
            for proc in reversed(processes):
                stop_server(proc)


@pytest.fixture
def api(deployment: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=deployment, timeout=30) as client:
        yield client


def register(api: httpx.Client, account: dict[str, Any], token: str, url: str, *types: str) -> dict[str, Any]:
    made = api.post(f"/v1/projects/{account['project']['id']}/webhooks", json={"url": url, "event_types": list(types)},
                    headers=bearer(token))
    assert made.status_code == 201, made.text
    return dict(made.json())


def deliveries(api: httpx.Client, account: dict[str, Any], token: str, hook: dict[str, Any]) -> list[dict[str, Any]]:
    page = api.get(f"/v1/projects/{account['project']['id']}/webhooks/{hook['id']}/deliveries", headers=bearer(token))
    assert page.status_code == 200, page.text
    return list(page.json()["items"])


def test_a_member_added_is_delivered_signed(api: httpx.Client) -> None:
    with serve(Receiver()) as receiver:
        owner, newcomer = signup(api, "Hooked"), signup(api, "Theirs")
        token = login(api, owner)
        hook = register(api, owner, token, receiver.url, "member.added")
        added = api.post(f"/v1/projects/{owner['project']['id']}/members",
                         json={"email": newcomer["user"]["email"], "role": "auditor"}, headers=bearer(token))
        assert added.status_code == 201
        eventually(lambda: receiver.requests)
        [request] = receiver.requests
        assert request.valid_for(hook["secret"])
        body = json.loads(request.body)
        assert body["type"] == "member.added" and body["data"]["user_id"] == newcomer["user"]["id"]
        shown = eventually(lambda: [d for d in deliveries(api, owner, token, hook) if d["status"] == "delivered"])
        assert shown[0]["id"] == request.id and [a["status_code"] for a in shown[0]["attempts"]] == [200]
        assert hook["secret"] not in json.dumps(shown)


def test_a_refused_delivery_is_retried_with_the_same_webhook_id(api: httpx.Client) -> None:
    with serve(Receiver(statuses=[500])) as receiver:
        owner = signup(api, "Flaky")
        token = login(api, owner)
        hook = register(api, owner, token, receiver.url, "client.secret.rotated")
        client_id = owner["client"]["client_id"]
        rotated = api.post(f"/v1/projects/{owner['project']['id']}/clients/{client_id}/rotate-secret", json={},
                           headers=bearer(token))
        assert rotated.status_code == 200
        first = eventually(lambda: [d for d in deliveries(api, owner, token, hook) if d["attempts"]])
        assert first[0]["status"] == "pending" and first[0]["attempts"][0]["status_code"] == 500
        assert first[0]["next_attempt_at"] is not None
        done = eventually(lambda: [d for d in deliveries(api, owner, token, hook) if d["status"] == "delivered"])
        assert [a["status_code"] for a in done[0]["attempts"]] == [500, 200]
        assert receiver.ids() == [done[0]["id"]] * 2
        payload = json.loads(receiver.requests[-1].body)
        assert payload["data"]["client_id"] == client_id
        assert rotated.json()["client_secret"] not in receiver.requests[-1].body.decode()

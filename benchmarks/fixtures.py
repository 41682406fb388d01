"""Unmeasured setup: parse and check the target URL, sign up bench accounts, obtain tokens.

Setup runs once, in the parent process; scenarios turn its results into prebuilt requests that are handed
to the worker processes.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import secrets
import string
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO
from urllib.parse import quote, quote_plus, urlencode, urlsplit

from benchmarks.httpclient import Connection, HttpProtocolError, Target, build_request

__all__ = ["Account", "PagedProject", "SetupContext", "SetupError", "basic_auth", "form", "parse_target"]

DASHBOARD_CLIENT_ID = "dashboard"
_FORM_HEADERS = {"Content-Type": "application/x-www-form-urlencoded"}
_JSON_HEADERS = {"Content-Type": "application/json"}
_SETUP_PARALLEL = 16  # connections used by bulk setup requests
_PROGRESS_INTERVAL = 0.5
_PASSWORD_ALPHABET = string.ascii_letters + string.digits
_MEMBER_ADD_PARALLEL = 4  # member additions all decide on the one project's stream: fewer lanes, fewer conflicts
_CONFLICT_PASSES = 12  # passes over member additions refused with 409 (concurrent change on the project's stream)
_MAX_PAGES = 10_000  # guard against a server whose cursors never end


class SetupError(Exception):
    """Setup could not be done (server down, unexpected answer); the message says why."""


def parse_target(url: str, *, allow_remote: bool = False) -> Target:
    """Parse the server URL and refuse anything but plain HTTP to a loopback host.

    Args:
        url: e.g. ``http://127.0.0.1:8000``.
        allow_remote: Accept a host that is not loopback.

    Returns:
        The target.

    Raises:
        ValueError: The URL is not usable, or its host is not loopback and ``allow_remote`` is false.
    """
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"only http:// URLs are supported, got {url!r}")
    host = parts.hostname
    if not host:
        raise ValueError(f"no host in {url!r}")
    if not allow_remote and not _is_loopback(host):
        raise ValueError(f"refusing to load non-loopback host {host!r} (pass --allow-remote if you mean it)")
    port = parts.port or 80
    host_header = parts.netloc.rpartition("@")[2]
    return Target(host=host, port=port, host_header=host_header, base_path=parts.path.rstrip("/"))


def _is_loopback(host: str) -> bool:
    """Return whether ``host`` is ``localhost`` or a loopback IP address."""
    if host.lower() in {"localhost", "localhost."} or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def form(fields: dict[str, str]) -> bytes:
    """Encode ``fields`` as an ``application/x-www-form-urlencoded`` body."""
    return urlencode(fields).encode("ascii")


def basic_auth(client_id: str, client_secret: str) -> str:
    """Return the ``Authorization`` value for client_secret_basic (RFC 6749 section 2.3.1).

    Both parts are form-urlencoded before being joined with ``:`` and base64-encoded.
    """
    raw = f"{quote_plus(client_id)}:{quote_plus(client_secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


@dataclass(slots=True)
class Account:
    """A bench user with their first project and that project's client (API key)."""

    email: str
    password: str
    user_id: str
    project_id: str
    client_id: str
    client_secret: str


@dataclass(frozen=True, slots=True)
class PagedProject:
    """One project with many members and many clients, seeded once and shared by the page-read scenarios.

    Attributes:
        owner: The project's owner (signed up for it; not one of the rotating bench accounts).
        members: Members besides the owner (each a developer).
        clients: Clients (API keys) in all, the one created at signup included.
    """

    owner: Account
    members: int
    clients: int


@dataclass(slots=True)
class SetupContext:
    """State shared by scenario builders: the target, the bench accounts and cached tokens.

    Attributes:
        target: The server.
        timeout: Seconds allowed for each setup request.
        concurrency: Virtual users the scenario will run with (across all processes); scenarios with per-user
            state build one session per virtual user.
        window: Seconds of load the scenario will run (warm-up plus measurement), to size consumable pools.
        revoke_rate: Estimated revocations per second, to size the ``revoke`` scenario's token pool.
        accounts: Accounts created by :meth:`signup`.
        progress: Where bulk setup shows its progress.
        seed_logins: Whether ``logout`` mints its logins in this process (``benchmarks.seed_logins``) instead of
            logging in over HTTP.
    """

    target: Target
    timeout: float = 30.0
    concurrency: int = 1
    window: float = 0.0
    revoke_rate: float = 400.0
    seed_logins: bool = False
    accounts: list[Account] = field(default_factory=list)
    progress: TextIO = field(default=sys.stderr, repr=False)
    _tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    _paged_projects: dict[tuple[int, int], PagedProject | SetupError] = field(default_factory=dict)

    async def call(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> tuple[int, bytes]:
        """Make one setup request on a fresh connection.

        Raises:
            SetupError: The server could not be reached or did not answer in time.
        """
        connection = Connection(self.target)
        try:
            async with asyncio.timeout(self.timeout):
                return await connection.request(build_request(self.target, method, path, headers, body))
        except (OSError, asyncio.IncompleteReadError, HttpProtocolError, TimeoutError) as exc:
            raise SetupError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        finally:
            connection.close()

    async def call_json(
        self, method: str, path: str, expect: int, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> dict[str, Any]:
        """Make one setup request and return its JSON object body.

        Raises:
            SetupError: The status is not ``expect`` or the body is not a JSON object.
        """
        status, payload = await self.call(method, path, headers, body)
        if status != expect:
            raise SetupError(f"{method} {path}: expected {expect}, got {status}: {payload[:300]!r}")
        try:
            data = json.loads(payload)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise SetupError(f"{method} {path}: body is not a JSON object: {payload[:300]!r}")
        return data

    async def signup(self, count: int) -> list[Account]:
        """Sign up ``count`` new random users (each gets a project and a client) and keep them."""
        self.accounts.extend(await asyncio.gather(*(self._signup_one() for _ in range(count))))
        return self.accounts

    async def _signup_one(self, prefix: str = "bench") -> Account:
        """Sign up one random user."""
        email = f"{prefix}-{secrets.token_hex(8)}@example.com"
        password = _random_password()
        body = json.dumps({"email": email, "password": password, "project_name": prefix}).encode()
        data = await self.call_json("POST", "/v1/signup", 201, _JSON_HEADERS, body)
        try:
            return Account(
                email=email,
                password=password,
                user_id=str(data["user"]["id"]),
                project_id=str(data["project"]["id"]),
                client_id=str(data["client"]["client_id"]),
                client_secret=str(data["client"]["client_secret"]),
            )
        except (KeyError, TypeError) as exc:
            raise SetupError(f"POST /v1/signup: unexpected body {json.dumps(data)[:300]}") from exc

    async def password_tokens(self, account: Account) -> dict[str, Any]:
        """Return the token response of a password grant for ``account`` (cached per account).

        Raises:
            SetupError: The grant failed or answered without an ``access_token``.
        """
        if account.email not in self._tokens:
            self._tokens[account.email] = await self.fresh_password_tokens(account)
        return self._tokens[account.email]

    async def fresh_password_tokens(self, account: Account) -> dict[str, Any]:
        """Return the token response of a new password grant for ``account`` (not cached: a fresh access token).

        Raises:
            SetupError: The grant failed or answered without an ``access_token``.
        """
        fields = {
            "grant_type": "password",
            "username": account.email,
            "password": account.password,
            "client_id": DASHBOARD_CLIENT_ID,
        }
        data = await self.call_json("POST", "/oauth2/token", 200, _FORM_HEADERS, form(fields))
        if not isinstance(data.get("access_token"), str):
            raise SetupError(f"password grant for {account.email}: no access_token in {json.dumps(data)[:300]}")
        return data

    async def settled(self, account: Account, *, attempts: int = 60, label: str = "[setup]",
                      what: str = "the setup's events", token: str | None = None,
                      since: float | None = None) -> float:
        """Wait until the server's token lookup and audit read models have applied everything written so far; return
        the seconds that took. ``token``: the account's access token, if already at hand (a password login first
        otherwise, not counted; it is slow enough to hide a short lag behind). ``since``: the ``time.monotonic()``
        the wait counts from, such as the end of a run's load (default: now, or after the login); a login made
        here then counts too, so pass ``token`` with it.

        A token listing and an audit page each wait, server-side, until their read model has reached the event
        store's head; they answer 503 if that takes longer than the server's wait. Bulk setup (thousands of issued
        tokens) leaves the models a backlog to apply, which would otherwise be applied during the measurement and
        be counted against the scenario. After a scenario, the same wait tells how far the models fell behind it:
        work a run left for after its window is work its numbers do not count.

        Raises:
            SetupError: The models did not catch up within ``attempts`` tries.
        """
        started = time.monotonic() if since is None else since
        if token is None:
            token = (await self.fresh_password_tokens(account))["access_token"]
            started = time.monotonic() if since is None else since
        headers = {"Authorization": f"Bearer {token}"}
        for path in (f"/v1/projects/{account.project_id}/tokens?limit=1",
                     f"/v1/projects/{account.project_id}/audit?limit=1"):
            for _ in range(attempts):
                status, _body = await self.call("GET", path, headers)
                if status == 200:
                    break
                if status != 503:
                    raise SetupError(f"GET {path}: expected 200 or 503, got {status}")
            else:
                raise SetupError(f"GET {path}: the read models did not catch up with {what}")
        waited = time.monotonic() - started
        print(f"{label} read models caught up with {what} in {waited:.1f} s", file=self.progress, flush=True)
        return waited

    async def paged_project(self, members: int, clients: int) -> PagedProject:
        """Return a project with ``members`` developers besides its owner and ``clients`` clients in all.

        Seeded on first use (slow: every member is signed up, and each signup hashes a password with argon2id),
        then cached, so every scenario of the run that asks for the same sizes reads the same project. A failed
        seeding is remembered too, and not tried again within the run.

        Raises:
            SetupError: A seeding request failed.
        """
        key = (members, clients)
        if key not in self._paged_projects:
            try:
                self._paged_projects[key] = await self._seed_paged_project(members, clients)
            except SetupError as exc:  # remembered: the next scenario fails at once instead of seeding again
                self._paged_projects[key] = exc
        found = self._paged_projects[key]
        if isinstance(found, SetupError):
            raise SetupError(f"seeding the paged project failed: {found}")
        return found

    async def _seed_paged_project(self, members: int, clients: int) -> PagedProject:
        """Sign up an owner and ``members`` users, add them to the owner's project, create the other clients."""
        label = "[paged project] setup"
        owner = await self._signup_one("bench-paged")
        password = _random_password()
        emails = [f"bench-member-{secrets.token_hex(8)}@example.com" for _ in range(members)]
        signups = [
            build_request(
                self.target,
                "POST",
                "/v1/signup",
                _JSON_HEADERS,
                json.dumps({"email": email, "password": password, "project_name": "bench-member"}).encode(),
            )
            for email in emails
        ]
        _expect_status(
            await self.fetch_many(signups, label=f"{label}: signing up {members} users (argon2id)"), 201, "signup"
        )
        members_path = f"/v1/projects/{owner.project_id}/members"
        headers = {**_JSON_HEADERS, "Authorization": f"Bearer {await self._access_token(owner)}"}
        adds = [
            build_request(
                self.target, "POST", members_path, headers, json.dumps({"email": e, "role": "developer"}).encode()
            )
            for e in emails
        ]
        await self._fetch_retrying_conflicts(adds, label=f"{label}: adding {members} members to one project")
        clients_path = f"/v1/projects/{owner.project_id}/clients"
        headers = {**_JSON_HEADERS, "Authorization": f"Bearer {await self._access_token(owner)}"}  # a fresh one
        creates = [
            build_request(self.target, "POST", clients_path, headers, json.dumps({"name": f"bench-{n}"}).encode())
            for n in range(1, clients)  # signup created the first
        ]
        _expect_status(
            await self.fetch_many(creates, label=f"{label}: creating {len(creates)} more clients"), 201, "client"
        )
        return PagedProject(owner=owner, members=members, clients=clients)

    async def _access_token(self, account: Account) -> str:
        """A fresh access token of ``account`` (dashboard tokens live 15 minutes: one per seeding phase)."""
        return str((await self.fresh_password_tokens(account))["access_token"])

    async def _fetch_retrying_conflicts(self, requests: Sequence[bytes], *, label: str) -> None:
        """Send member additions that must answer 201, sending again those refused with 409 or answered 5xx.

        A 409 is usually a concurrent addition that changed the project first; one that says the user is already
        a member means an earlier attempt went through, which counts as done. 5xx answers are sent again too
        (nothing was added), but counted and reported on the progress stream: they are server errors to look at.

        Raises:
            SetupError: A request got another status, or was still refused after the last pass.
        """
        pending = list(range(len(requests)))
        server_errors = 0
        for attempt in range(1, _CONFLICT_PASSES + 1):
            responses = await self.fetch_many(
                [requests[index] for index in pending],
                label=label if attempt == 1 else f"{label} (pass {attempt}, sending again)",
                parallel=_MEMBER_ADD_PARALLEL,
            )
            retry = [_retryable(status, body, attempt) for status, body in responses]
            server_errors += sum(1 for status, _ in responses if status >= 500)
            done = [
                (201, b"") if _already_member(r, attempt) else r
                for r, again in zip(responses, retry, strict=True)
                if not again
            ]
            _expect_status(done, 201, label)
            pending = [index for index, again in zip(pending, retry, strict=True) if again]
            if not pending:
                break
        if server_errors:
            self.progress.write(f"{label}: warning: {server_errors} answers were 5xx (sent again; see server log)\n")
            self.progress.flush()
        if pending:
            raise SetupError(f"{label}: {len(pending)} requests still refused after {_CONFLICT_PASSES} passes")

    async def page_cursors(self, path: str, headers: dict[str, str], *, limit: int, wanted: int) -> list[str]:
        """Walk a paginated listing from its first page; return ``wanted`` cursors of full pages deep in it.

        Args:
            path: The listing, without query string.
            headers: Request headers (the bearer token).
            limit: Page size.
            wanted: How many cursors to return: spread evenly over the listing's full pages after the first, the
                deepest one included.

        Raises:
            SetupError: A page did not answer 200 with ``items``, or the listing has no second full page.
        """
        full: list[str] = []
        cursor: str | None = None
        for _ in range(_MAX_PAGES):
            query = f"?limit={limit}" + (f"&cursor={quote(cursor, safe='')}" if cursor else "")
            data = await self.call_json("GET", path + query, 200, headers)
            items, following = data.get("items"), data.get("next_cursor")
            if not isinstance(items, list):
                raise SetupError(f"GET {path}: no items in {json.dumps(data)[:300]}")
            if cursor and len(items) == limit:
                full.append(cursor)
            if not isinstance(following, str) or not following:
                break
            cursor = following
        if not full:
            raise SetupError(f"GET {path}: no full page after the first (is the project seeded?)")
        picks = sorted({max(0, round((k + 1) * len(full) / wanted) - 1) for k in range(wanted)})
        return [full[index] for index in picks]

    async def fetch_many(
        self, requests: Sequence[bytes], *, label: str, parallel: int = _SETUP_PARALLEL
    ) -> list[tuple[int, bytes]]:
        """Send many setup requests over ``parallel`` keep-alive connections, showing progress on stderr.

        Args:
            requests: Prebuilt requests.
            label: Shown in the progress line, e.g. ``"[revoke] issuing tokens"``.
            parallel: Connections to use.

        Returns:
            ``(status, body)`` of each request, in the order of ``requests``.

        Raises:
            SetupError: A request could not be sent or was not answered in time.
        """
        results: list[tuple[int, bytes]] = [(0, b"")] * len(requests)
        pending = iter(range(len(requests)))
        done = 0

        async def lane() -> None:
            nonlocal done
            connection = Connection(self.target)
            try:
                for index in pending:  # shared by the lanes: each index is taken once
                    async with asyncio.timeout(self.timeout):
                        results[index] = await connection.request(requests[index])
                    done += 1
            except (OSError, asyncio.IncompleteReadError, HttpProtocolError, TimeoutError) as exc:
                raise SetupError(f"{label}: {type(exc).__name__}: {exc}") from exc
            finally:
                connection.close()

        started = time.perf_counter()
        lanes = [asyncio.create_task(lane()) for _ in range(min(parallel, len(requests)))]
        try:
            while lanes and not all(task.done() for task in lanes):
                await asyncio.wait(lanes, timeout=_PROGRESS_INTERVAL, return_when=asyncio.FIRST_EXCEPTION)
                if any(task.done() and task.exception() for task in lanes):
                    break
                self.progress.write(f"\r{label}: {done}/{len(requests)}")
                self.progress.flush()
            for task in lanes:
                if task.done():
                    task.result()  # raises the first failure
        finally:
            for task in lanes:
                task.cancel()
            await asyncio.gather(*lanes, return_exceptions=True)
        self.progress.write(f"\r{label}: {done}/{len(requests)} in {time.perf_counter() - started:.1f} s\n")
        self.progress.flush()
        return results

    async def client_tokens(self, wanted: Sequence[tuple[Account, int]], *, label: str) -> list[list[str]]:
        """Issue client_credentials access tokens (client_secret_basic) in bulk.

        Args:
            wanted: ``(account, count)`` pairs; an account may appear more than once.
            label: Progress label.

        Returns:
            For each pair, ``count`` access tokens of that account's client.

        Raises:
            SetupError: A grant failed.
        """
        requests = [
            build_request(
                self.target,
                "POST",
                "/oauth2/token",
                {**_FORM_HEADERS, "Authorization": basic_auth(account.client_id, account.client_secret)},
                form({"grant_type": "client_credentials"}),
            )
            for account, count in wanted
            for _ in range(count)
        ]
        tokens = iter(
            [
                _token_field(status, body, "access_token")
                for status, body in await self.fetch_many(requests, label=label)
            ]
        )
        return [[next(tokens) for _ in range(count)] for _, count in wanted]

    async def refresh_logins(self, accounts: Sequence[Account], *, label: str) -> list[str]:
        """Log each account in (once per entry, not cached) with the password grant; return the refresh tokens.

        Each entry starts a refresh-token family of its own, so one chain's rotations never touch another's.

        Raises:
            SetupError: A grant failed.
        """
        requests = [
            build_request(
                self.target,
                "POST",
                "/oauth2/token",
                _FORM_HEADERS,
                form(
                    {
                        "grant_type": "password",
                        "username": account.email,
                        "password": account.password,
                        "client_id": DASHBOARD_CLIENT_ID,
                    }
                ),
            )
            for account in accounts
        ]
        # argon2id makes password grants CPU-bound on the server: a few connections are enough.
        responses = await self.fetch_many(requests, label=label, parallel=4)
        return [_token_field(status, body, "refresh_token") for status, body in responses]


def _random_password() -> str:
    """A random 20-character password."""
    return "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(20))


def _already_member(response: tuple[int, bytes], attempt: int) -> bool:
    """Whether a member addition sent again was refused because an earlier attempt had added the user."""
    status, body = response
    return attempt > 1 and status == 409 and b"already a member" in body


def _retryable(status: int, body: bytes, attempt: int) -> bool:
    """Whether a member addition should be sent again: a 5xx, or a 409 other than "already a member"."""
    return status >= 500 or (status == 409 and not _already_member((status, body), attempt))


def _expect_status(responses: Sequence[tuple[int, bytes]], expect: int, what: str) -> None:
    """Raise for the first response whose status is not ``expect``.

    Raises:
        SetupError: Names ``what``, the status, how many failed and the first body.
    """
    failed = [(status, body) for status, body in responses if status != expect]
    if failed:
        status, body = failed[0]
        raise SetupError(f"{what}: {len(failed)} of {len(responses)} not {expect}; first: {status} {body[:300]!r}")


def _token_field(status: int, body: bytes, name: str) -> str:
    """Return the string field ``name`` of a 200 token response.

    Raises:
        SetupError: The status is not 200 or the field is missing.
    """
    if status == 200:
        try:
            value = json.loads(body).get(name)
        except (ValueError, AttributeError):
            value = None
        if isinstance(value, str):
            return value
    raise SetupError(f"POST /oauth2/token: expected 200 with {name}, got {status}: {body[:300]!r}")

"""Refused token requests as TokenRequestRefused events: what is recorded, and what never is.

A refusal names the grant type, the client and, when known, the user, the refresh token concerned and the project
(the client's, or the refresh token's), with the audit reason, the RFC 6749 error code, the source address and the
user agent. Presented values that could be secrets are never recorded: not the secret, password or refresh token;
not a client_id unless it is the dashboard's or has a client id's exact shape (a secret or a password pasted into
the wrong field, a secret with a character cut off: its checksum is public, so it still gives the secret away);
not a grant_type other than a known one or an IETF extension grant's URN; and not the email of a login (a password
typed into the email field would otherwise be kept forever).
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

from application.oauth.errors import InvalidClient, InvalidGrant, OAuthError, TemporarilyUnavailable, TooManyAttempts
from application.oauth.limits import REFUSAL, AttemptBudget, AttemptKey, source_network
from application.ports import AttemptLimiter, CredentialMinter
from application.store import Keyledger
from domain import refusal as why
from domain.client import Client
from domain.ids import DASHBOARD_CLIENT_ID, SYSTEM_ACTOR, client_aggregate_id
from domain.policy import GrantType
from domain.refusal import Refusal
from domain.user import User

_KNOWN_GRANT_TYPES = frozenset({*GrantType, "authorization_code", "implicit"})
_EXTENSION_GRANT = re.compile(r"urn:ietf:params:oauth:grant-type:[a-z0-9-]{1,32}")
UNRECOGNISED = "[unrecognised]"
MAX_USER_AGENT = 256


@dataclass(frozen=True, slots=True)
class RefusalContext:
    """What the decision knew when it refused: set on the error (``OAuthError.context``) where it is raised."""

    project_id: UUID | None = None
    user_id: UUID | None = None
    token_id: UUID | None = None


def grant_type_of(value: str | None) -> str:
    """A presented grant_type as it may be recorded: a grant type of RFC 6749 or an IETF extension grant's URN
    (RFC 6749 section 4.5), else a placeholder: a secret pasted there, even with its prefix damaged, is not kept
    (an allow-list: neither form can hold a secret's prefix, ``klcs_`` or ``klrt_``)."""
    if value is None:
        return ""
    return value if value in _KNOWN_GRANT_TYPES or _EXTENSION_GRANT.fullmatch(value) else UNRECOGNISED


def client_identifier(value: str | None, minter: CredentialMinter) -> str | None:
    """A presented client_id as it may be recorded: the dashboard's, or one with a client id's exact shape
    (registered or not); anything else, a password or a damaged secret typed into the field, as a placeholder."""
    if value is None or value == DASHBOARD_CLIENT_ID:
        return value
    return value if minter.is_client_id(value) else UNRECOGNISED


def user_agent(value: str | None) -> str | None:
    """The User-Agent header, cut to a bounded length and to printable characters."""
    if value is None:
        return None
    return "".join(c if c.isprintable() else "?" for c in value[:MAX_USER_AGENT])


@dataclass(frozen=True, slots=True)
class RefusalFactory:
    """Builds the unsaved Refusal aggregate of a refused request."""

    app: Keyledger
    minter: CredentialMinter

    def project_of(self, client_id: str | None, preloaded: Mapping[UUID, Client] | None) -> UUID | None:
        """The project of a registered project client (its aggregate read only on this refusal path)."""
        if not client_id or client_id == DASHBOARD_CLIENT_ID:
            return None
        key = client_aggregate_id(client_id)
        client = preloaded.get(key) if preloaded is not None else None
        if client is None:
            client = self.app.find(key, Client, copy=False)
        return None if client is None else client.project_id

    def build(self, error: OAuthError, request: Any, preloaded: Mapping[UUID, Client] | None) -> Refusal:
        """The TokenRequestRefused aggregate of ``request`` refused with ``error``."""
        context = error.context if isinstance(error.context, RefusalContext) else RefusalContext()
        client_id = client_identifier(request.client_id, self.minter)
        project_id = context.project_id
        if project_id is None and client_id not in (None, UNRECOGNISED):
            project_id = self.project_of(client_id, preloaded)
        return Refusal(refusal_id=uuid4(), project_id=project_id, grant_type=grant_type_of(request.grant_type),
                       client_id=client_id, user_id=context.user_id, token_id=context.token_id,
                       reason=error.reason, error=error.error, source=request.source,
                       user_agent=user_agent(request.user_agent), actor=SYSTEM_ACTOR)


def refusal_key(source: str | None) -> tuple[AttemptKey, ...]:
    """The key counting a source address's (an IPv6 /64's) recorded refusals (none without an address)."""
    return ((REFUSAL, source_network(source)),) if source else ()


def client_refusal_key(client_id: str | None) -> tuple[AttemptKey, ...]:
    """The key counting a project client's recorded failed authentications, from every address together (none for
    the public dashboard). Its value cannot be an address's: no address starts with "client "."""
    return ((REFUSAL, f"client {client_id}"),) if client_id and client_id != DASHBOARD_CLIENT_ID else ()


def counts_against_source(limiter: AttemptLimiter, error: OAuthError, request: Any,
                          budget: AttemptBudget | None) -> bool:
    """Whether a refusal is to be recorded: 429 and 503 answers never; a failed password login always (its
    account's limit bounds them); a failed client authentication while its client has recorded fewer than the
    address limit this window (the client is locked per address, and many addresses may fail at one client: each
    refusal is an entry of the client's project's audit ledger); any other while its source address has recorded
    fewer than its limit. Counted here, in the batch's ``budget`` or with one ``reserve``; past the limit a refusal
    is answered as before: these keys only stop the recording, they lock nothing."""
    if isinstance(error, TooManyAttempts | TemporarilyUnavailable):
        return False
    if error.counted:
        keys = client_refusal_key(request.client_id) if isinstance(error, InvalidClient) else ()
    else:
        keys = refusal_key(request.source)
    if not keys:
        return True
    if budget is not None:
        if budget.refusal(keys) is not None:
            return False
        budget.fail(keys)
        return True
    try:
        return limiter.reserve(keys) is None
    except TemporarilyUnavailable:
        return True  # the limits' store is down: record rather than lose the refusal


def login_refused(user: User | None) -> OAuthError:
    """The refusal of a password login, with the audit's reason (the answer is the same for every reason)."""
    reason = why.USER_UNKNOWN if user is None else why.USER_DISABLED if user.disabled else why.PASSWORD_WRONG
    context = RefusalContext(user_id=None if user is None else user.id)
    return InvalidGrant("the username or password is wrong", reason=reason).about(context, counted=True)

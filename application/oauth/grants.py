"""The token endpoint's grants: password (RFC 6749 section 4.3) and client_credentials (section 4.4).

Every decision is taken on the event stream (the client's and the user's own aggregates), never on a read model,
so a rotated or revoked secret is refused the instant its event is saved.
"""

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TypeVar
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from application.oauth.errors import (
    InvalidClient,
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    OAuthError,
    TemporarilyUnavailable,
    TooManyAttempts,
    UnauthorizedClient,
    UnsupportedGrantType,
)
from application.oauth.in_flight import RotationAnswers, in_flight
from application.oauth.limits import AttemptBudget, AttemptKey, account_keys, client_keys, limited_attempt
from application.oauth.refusals import (
    RefusalContext,
    RefusalFactory,
    client_refusal_key,
    counts_against_source,
    login_refused,
    refusal_key,
)
from application.oauth.revocation import IndexLagging, Revoker
from application.oauth.tokens import Grant, IssuedTokens, TokenMint, lifetime_within
from application.ports import AttemptLimiter, Clock, CredentialMinter, PasswordHasher, Saver, SecretHasher
from application.store import Keyledger
from domain import refusal as why
from domain.client import DASHBOARD, Client, PublicClient
from domain.ids import (
    DASHBOARD_CLIENT_ID,
    SYSTEM_ACTOR,
    client_actor,
    client_aggregate_id,
    email_index_id,
    keyring_id,
    login_access_token_id,
    refresh_token_aggregate_id,
    user_actor,
)
from domain.policy import GrantType, LifetimePolicy
from domain.scopes import parse_scope, unknown_scopes
from domain.token import ROTATED_ONCE, Token, TokenKind
from domain.user import EmailIndex, User

logger = logging.getLogger(__name__)

SUPPORTED_GRANTS = frozenset({GrantType.PASSWORD, GrantType.CLIENT_CREDENTIALS, GrantType.REFRESH_TOKEN})
# A token request is decided at most this many times while the key ring keeps moving under it (each move: a key
# created, activated, retired or revoked), then refused with ``key_ring_moving``.
KEY_RING_ATTEMPTS = 2

T = TypeVar("T")
REUSE_DETECTED = "refresh token reuse detected"  # the reason of the revocations a reuse detection records


def key_ring_moving() -> TemporarilyUnavailable:
    """The answer to a token request whose tokens were signed on a key ring that moved again before each save:
    nothing was issued, and asking again is safe."""
    return TemporarilyUnavailable("the signing keys changed while the token was issued; try again")


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """A parsed token request. Secrets live here only for the duration of the request."""

    grant_type: str
    client_id: str | None = None
    client_secret: str | None = None
    username: str | None = None
    password: str | None = None
    scope: str | None = None
    refresh_token: str | None = None
    source: str | None = None
    user_agent: str | None = None
    # When the server received the request (before reading its body): tells a concurrent refresh from a replay.
    received_at: datetime | None = None
    # Set when a decision of this request was not saved because a stream it was guarded by moved: deciding it again
    # reads what the first decision took as it normally is (a rotation's family's first refresh token, see
    # ``TokenEndpoint.family_guard``).
    decided_before: bool = False


def check_person(token: Token, user: User | None, context: RefusalContext) -> None:
    """Refuses a person's refresh token whose account is gone or disabled (``application.users``), or whose session
    was decided before their last password change (``User.predates_password_change``; ``application.passwords``),
    whether or not its revocations have reached it yet."""
    if user is None or user.disabled:
        raise InvalidGrant("the user can no longer log in", reason=why.USER_DISABLED).about(context)
    if user.predates_password_change(issued_at=token.issued_at, account_version=token.account_version):
        raise InvalidGrant("the refresh token is revoked", reason=why.REFRESH_TOKEN_REVOKED).about(context)


@dataclass(frozen=True, slots=True)
class TokenEndpoint:
    """Authenticates the client, checks the grant and issues tokens.

    Failed password logins and failed client authentications are counted by ``limiter`` (see
    ``application.oauth.limits``): past the limit the attempt is refused with ``TooManyAttempts`` before its
    credential is looked at.
    """

    app: Keyledger
    clock: Clock
    passwords: PasswordHasher
    secrets: SecretHasher
    minter: CredentialMinter
    mint: TokenMint
    save: Saver
    lifetimes: LifetimePolicy
    revoker: Revoker
    limiter: AttemptLimiter
    answers: RotationAnswers | None = None

    def handle(self, request: TokenRequest) -> IssuedTokens:
        """Answers a token request, saving the issued tokens (or the refusal) before returning or raising.

        Tokens whose guard moved since the decision are not saved (the save conflicts): signed on a key ring that
        has moved, of a login or refresh whose account changed (disabled), of a refresh whose family ended, of a
        client that changed. The request is decided again on the streams as they are now (``signed_on_stale_keys``),
        ``KEY_RING_ATTEMPTS`` times in all. A refresh token rotated first by another request is not: that conflict
        is raised (eventsourcing's ``IntegrityError``).
        """
        for _ in range(KEY_RING_ATTEMPTS):
            issued = self._decided(request)
            try:
                self.save(*issued.aggregates, guards=issued.guards)
            except IntegrityError:
                if not self.signed_on_stale_keys(issued):
                    raise
                request = replace(request, decided_before=True)
                continue
            self.answered(issued)
            return issued
        raise key_ring_moving()

    def _decided(self, request: TokenRequest) -> IssuedTokens:
        """``decide``, saving a refusal's aggregates before raising it."""
        try:
            return self.decide(request)
        except OAuthError as error:
            if error.aggregates:
                self.save(*error.aggregates)
            raise

    def signed_on_stale_keys(self, issued: IssuedTokens) -> bool:
        """Whether a save of ``issued`` that conflicted may be decided again: its access token was signed on a key
        ring that has moved since (the signer then takes up the ring as it is), or another stream it was guarded by
        moved (an account disabled, a family ended, a client changed: deciding again refuses it or decides on the
        stream as it is), and the refresh token it rotated, if any, is still where the decision found it. A rotation
        that lost to another request is not decided again: its token is used now, and a second decision could take
        the loser for a replay and end the login.
        """
        rotated = issued.rotated
        if rotated is not None and self.app.versions([rotated]).get(rotated) != issued.rotated_from:
            return False
        if any(stream == keyring_id() and not self.mint.signer.is_current(version)
               for stream, version in issued.guards):
            return True
        # The account or the family's first refresh token moved (disabled, password changed, family ended): deciding
        # again refuses the request, and ends the family if that is what moved.
        others = {stream: version for stream, version in issued.guards if stream != keyring_id()}
        return bool(others) and self.app.versions(list(others)) != others

    def answered(self, issued: IssuedTokens) -> None:
        """Records, once ``issued`` is saved and before it is answered, when a rotation was answered: a presentation
        of the used token received before then was in flight, not a replay (``application.oauth.in_flight``)."""
        if issued.rotated is not None and self.answers is not None:
            self.answers.answered(issued.rotated, self.clock.now())

    def decide(self, request: TokenRequest) -> IssuedTokens:
        """Decides a token request: the tokens to answer with and their unsaved aggregates, or an OAuthError.

        The caller must save ``aggregates`` before sending the tokens, so that no token is ever in a client's hands
        without its TokenIssued event in the store; and, for an OAuthError, the error's ``aggregates`` (its
        TokenRequestRefused) before answering it.
        """
        try:
            return self._decide(request, None, None)
        except OAuthError as error:
            raise self.refused(error, request) from None

    def refused(self, error: OAuthError, request: TokenRequest, preloaded: Mapping[UUID, Client] | None = None,
                budget: AttemptBudget | None = None) -> OAuthError:
        """Attaches the refusal's TokenRequestRefused aggregate to ``error`` when it is to be recorded; returns it.

        Failed authentications are recorded (the limits count them and lock their keys); other refusals are
        counted per source address and recorded up to the address limit per window (``counts_against_source``):
        so the abuse limits bound how many refusals one address can have recorded. 429 and 503 answers are not
        recorded.
        """
        if counts_against_source(self.limiter, error, request, budget):
            error.aggregates = (RefusalFactory(app=self.app, minter=self.minter).build(error, request, preloaded),)
        return error

    def _decide(self, request: TokenRequest, preloaded: Mapping[UUID, Client] | None,
                budget: AttemptBudget | None) -> IssuedTokens:
        if request.grant_type not in SUPPORTED_GRANTS:
            raise UnsupportedGrantType("the grant type is not supported", reason=why.UNSUPPORTED_GRANT)
        client = self.authenticate_client(request, preloaded, budget)
        if not client.allows_grant(request.grant_type):
            raise UnauthorizedClient("the client may not use this grant type", reason=why.GRANT_NOT_ALLOWED)
        scope = self.granted_scope(client.scopes, request.scope)
        if request.grant_type == GrantType.PASSWORD:
            return self.password_grant(request, scope)
        if request.grant_type == GrantType.REFRESH_TOKEN:
            return self.refresh_grant(request, client)
        assert isinstance(client, Client)
        return self.client_credentials_grant(client, scope)

    def decide_batch(self, requests: Sequence[TokenRequest]) -> list[IssuedTokens | OAuthError]:
        """Decides many token requests with one read of all their clients (the group-commit hot path).

        Each request gets its own outcome: tokens, or the OAuthError it alone caused. Abuse limits cost one read of
        the batch's counters and, only if some client authentication failed (or cleared earlier failures), one
        write: never a round trip per request.
        """
        ids = [client_aggregate_id(r.client_id) for r in requests if r.client_id and r.client_id != DASHBOARD_CLIENT_ID]
        # The refusal counters of every source address and client are read too: they bound the refusals recorded
        # (see ``refused``).
        keys = [key for r in requests
                for key in (*self.client_attempt_keys(r), *refusal_key(r.source), *client_refusal_key(r.client_id))]
        try:
            budget = self.limiter.budget(keys)
        except TemporarilyUnavailable as error:
            return [TemporarilyUnavailable(error.description) for _ in requests]
        clients = self.app.find_many(ids, Client) if ids else {}
        outcomes: list[IssuedTokens | OAuthError] = []
        for request in requests:
            try:
                outcomes.append(self._decide(request, clients, budget))
            except OAuthError as error:
                outcomes.append(self.refused(error, request, clients, budget))
        if budget.dirty:
            self.limiter.settle(budget)
        return outcomes

    @staticmethod
    def client_attempt_keys(request: TokenRequest) -> tuple[AttemptKey, ...]:
        """The abuse-limit keys of a request's client authentication (none for the public dashboard)."""
        if not request.client_id or request.client_id == DASHBOARD_CLIENT_ID:
            return ()
        return client_keys(request.client_id, request.source)

    def authenticate_client(self, request: TokenRequest, preloaded: Mapping[UUID, Client] | None = None,
                            budget: AttemptBudget | None = None) -> Client | PublicClient:
        """RFC 6749 section 2.3: the dashboard is public and sends no secret; project clients must.

        A project client's authentication is limited per client and source address, and per address
        (``client_keys``): counted before the secret is checked (``reserve``), or, in a batch, against the batch's
        ``budget``. A success clears the client's failures from that address, never the address's own.
        """
        if not request.client_id:
            raise InvalidClient("client authentication is required", reason=why.CLIENT_AUTHENTICATION_MISSING)
        if request.client_id == DASHBOARD_CLIENT_ID:
            if request.client_secret is not None:
                raise InvalidClient("the dashboard client is public and has no secret",
                                    reason=why.PUBLIC_CLIENT_WITH_SECRET)
            return DASHBOARD
        keys = client_keys(request.client_id, request.source)
        if budget is None:
            client = self.limited_attempt(keys, keys[0], lambda: self.verify_client(request, None))
        else:
            wait = budget.refusal(keys)
            if wait is not None:
                raise TooManyAttempts(wait)
            client = self.verify_client(request, preloaded)
            if client is None:
                budget.fail(keys)
            else:
                budget.succeed(keys[0])
        if client is None:
            raise InvalidClient("client authentication failed",
                                reason=self.client_refusal(request, preloaded)).about(None, counted=True)
        return client

    def client_refusal(self, request: TokenRequest, preloaded: Mapping[UUID, Client] | None) -> str:
        """Why a project client's authentication failed, for the audit (worked out only once it has failed)."""
        secret = request.client_secret
        if not secret:
            return why.CLIENT_AUTHENTICATION_MISSING
        if not self.minter.is_client_secret(secret):
            return why.CLIENT_SECRET_MALFORMED
        key = client_aggregate_id(str(request.client_id))
        client = preloaded.get(key) if preloaded is not None else None
        client = client or self.app.find(key, Client, copy=False)
        if client is None:
            return why.CLIENT_UNKNOWN
        return client.secret_refusal(self.secrets.hash(secret), self.clock.now())

    def verify_client(self, request: TokenRequest, preloaded: Mapping[UUID, Client] | None) -> Client | None:
        """The project client if the presented secret is one of its current secrets, else None."""
        secret = request.client_secret
        # Malformed secrets are refused before any database look-up.
        if not request.client_id or not secret or not self.minter.is_client_secret(secret):
            return None
        client_key = client_aggregate_id(request.client_id)
        found = preloaded.get if preloaded is not None else lambda key: self.app.find(key, Client, copy=False)
        client = found(client_key)
        if client is None or not client.secret_matches(self.secrets.hash(secret), self.clock.now()):
            return None
        return client

    def limited_attempt(self, keys: Sequence[AttemptKey], reset: AttemptKey,
                        verify: Callable[[], T | None]) -> T | None:
        """``limits.limited_attempt`` on this endpoint's limiter."""
        return limited_attempt(self.limiter, keys, reset, verify)

    @staticmethod
    def granted_scope(allowed: frozenset[str], requested: str | None) -> str:
        """RFC 6749 section 3.3: the requested scope if within the client's, else all of the client's scope."""
        scopes = parse_scope(requested)
        if requested is not None and not scopes:
            raise InvalidScope("the scope is empty", reason=why.INVALID_SCOPE)
        if unknown_scopes(scopes):
            raise InvalidScope("unknown scope: " + " ".join(unknown_scopes(scopes)))
        if not set(scopes) <= allowed:
            raise InvalidScope("the scope exceeds what the client was given")
        return " ".join(scopes or sorted(allowed))

    def password_grant(self, request: TokenRequest, scope: str) -> IssuedTokens:
        """RFC 6749 section 4.3: a person logs into the dashboard with email and password."""
        if not request.username or request.password is None:
            raise InvalidRequest("username and password are required", reason=why.MISSING_PARAMETER)
        username, password = request.username, request.password
        found: list[User | None] = [None]
        decided_on: list[int] = [0]

        def check() -> User | None:
            user = found[0] = self.find_user(username)
            # The version before ``disabled`` is read: the cached user may be fast-forwarded meanwhile by another
            # request, and the guard must be the version this decision saw (eventsourcing sets it after applying).
            decided_on[0] = user.version if user is not None else 0
            ok = self.passwords.verify(user.password_hash if user else None, password)
            return user if user is not None and ok and not user.disabled else None

        # Unknown emails are counted like registered ones: the answer never tells whether an account exists.
        keys = account_keys(username, request.source)
        user = self.limited_attempt(keys, keys[0], check)
        if user is None:
            raise login_refused(found[0])
        return self.login_tokens(user, scope, decided_on=decided_on[0])

    def login_tokens(self, user: User, scope: str, *, decided_on: int) -> IssuedTokens:
        """A login's access and refresh tokens for ``user``, whose password was checked on its stream at version
        ``decided_on`` (the save's guard). Also what the logout benchmark's seeding mints, without the argon2id."""
        now = self.clock.now()
        grant = Grant(grant_type=GrantType.PASSWORD, client_id=DASHBOARD_CLIENT_ID, project_id=None,
                      user_id=user.id, scope=scope, actor=user_actor(user.id), account_version=decided_on)
        refresh, refresh_agg = self.mint.refresh_token(grant, now, self.lifetimes.refresh_token_ttl,
                                                       family_ttl=self.lifetimes.refresh_family_ttl)
        ttl = lifetime_within(self.lifetimes.dashboard_access_token_ttl, now, refresh_agg.family_expires_at)
        access, access_agg, key_guard = self.mint.access_token(grant, now, ttl, family_id=refresh_agg.id,
                                                               token_id=login_access_token_id(refresh_agg.id))
        # Guarded by the user's stream too: an account disabled after this decision (``application.users``) makes
        # the save conflict, so no login decided before it issues a token after it.
        return IssuedTokens(access_token=access, expires_in=ttl, scope=scope, refresh_token=refresh,
                            aggregates=(access_agg, refresh_agg),  # access first: Revoker.revoke_family relies on it
                            guards=(key_guard, (user.id, decided_on)))

    def refresh_grant(self, request: TokenRequest, client: Client | PublicClient) -> IssuedTokens:
        """RFC 6749 section 6 with rotation (RFC 9700 section 4.14.2).

        The presented token is used up and a new access and refresh token are issued in its family. Presenting a
        used token again is reuse: the whole family is revoked and RefreshTokenReuseDetected recorded. Two
        concurrent refreshes of one token both append to its stream at the same version, so exactly one commits.
        """
        value = request.refresh_token
        if not value:
            raise InvalidRequest("refresh_token is required", reason=why.MISSING_PARAMETER)
        if not self.minter.is_refresh_token(value):
            raise InvalidGrant("the refresh token is invalid", reason=why.REFRESH_TOKEN_MALFORMED)
        token = self.app.find(refresh_token_aggregate_id(self.secrets.hash(value)), Token)
        if token is None or token.kind != TokenKind.REFRESH or token.client_id != client.client_id:
            raise InvalidGrant("the refresh token is invalid", reason=why.REFRESH_TOKEN_UNKNOWN)
        context = RefusalContext(project_id=token.project_id, user_id=token.user_id, token_id=token.id)
        now = self.clock.now()
        family = self.check_presented(token, request, now, context)
        try:
            scope = self.granted_scope(frozenset(token.scope.split()), request.scope)
        except InvalidScope as error:
            raise error.about(context) from None
        user = self.app.find(token.user_id, User, copy=False) if token.user_id else None
        # As a login's (see ``password_grant``): the version this decision saw guards the save, so a refresh decided
        # before its account was disabled issues nothing after (``application.users``).
        decided_on = None if user is None else user.version  # before the account is checked, as a login's
        account = () if user is None else ((user.id, decided_on),)
        if token.user_id is not None:
            check_person(token, user, context)
        ttl = lifetime_within(self.lifetimes.dashboard_access_token_ttl, now, token.family_expires_at)
        if ttl < 1:  # the login ends within the second the token would be issued in: it would be dead on arrival
            raise InvalidGrant("the refresh token is expired", reason=why.REFRESH_TOKEN_EXPIRED).about(context)
        grant = Grant(grant_type=GrantType.REFRESH_TOKEN, client_id=client.client_id, project_id=token.project_id,
                      user_id=token.user_id, scope=scope, actor=user_actor(token.user_id) if token.user_id
                      else client_actor(client.client_id), account_version=decided_on)
        # RFC 6749 section 6: a narrower scope is for the new access token only; the refresh token keeps the scope
        # the resource owner originally granted, which a later refresh may ask for again (or gets by omitting it).
        refresh, child = self.mint.refresh_token(replace(grant, scope=token.scope), now,
                                                 self.lifetimes.refresh_token_ttl,
                                                 family_ttl=self.lifetimes.refresh_family_ttl, parent=token)
        access, access_agg, key_guard = self.mint.access_token(grant, now, ttl, family_id=token.family_id,
                                                               parent_id=token.id)
        read = token.version
        token.refresh(refresh_id=child.id, access_id=access_agg.id, now=now, actor=grant.actor)
        if self.answers is not None:
            self.answers.unanswered(token.id)  # before the save: a loser that sees it used knows no answer left yet
        # The used-up token's TokenRefreshed is saved last. The token lookup model may apply a transaction in two
        # batches, and a reuse detection racing this rotation selects the family's live tokens from it: with the new
        # pair applied first, any part it holds still shows this token live, whose stream names the pair; with this
        # token's event first, it could show the token used and the pair not yet issued, and the pair survived the
        # detection (``Revoker.revoke_family``).
        return IssuedTokens(access_token=access, expires_in=ttl, scope=scope, refresh_token=refresh,
                            aggregates=(child, access_agg, token), guards=(key_guard, *account, *family),
                            rotated=token.id, rotated_from=read)

    def check_presented(self, token: Token, request: TokenRequest, now: datetime,
                        context: RefusalContext) -> tuple[tuple[UUID, int], ...]:
        """Refuses a presented refresh token that may not be used at ``now``, detecting a replay (see
        ``refresh_grant``); returns the rotation's guard on its family (``family_guard``)."""
        refusal = token.refusal(now)
        if refusal == "reused" and in_flight(token, request.received_at, self.answers,
                                             timedelta(seconds=self.lifetimes.refresh_reuse_leeway)):
            raise InvalidGrant("the refresh token was already used",
                               reason=why.REFRESH_TOKEN_CONFLICT).about(context)  # a concurrent loser, not a replay
        if refusal == "reused" and not token.reuse_detected:
            # Once per token: its family is revoked then and cannot grow again, so a later replay is refused like
            # any other (and recorded within the abuse limits), not another event and family sweep for each one.
            self.refuse_reuse(token, request.source)
        if refusal is not None:
            raise InvalidGrant(f"the refresh token is {refusal}", reason=f"refresh_token_{refusal}").about(context)
        return self.family_guard(token, request, context)

    def family_guard(self, token: Token, request: TokenRequest,
                     context: RefusalContext) -> tuple[tuple[UUID, int], ...]:
        """The rotation of ``token`` guarded by its family's first refresh token, which records the family's end
        (``Token.end_family``): no rotation decided before a reuse was detected issues a pair after it.

        While the family lives, that token's stream holds its issuance and its rotation (``ROTATED_ONCE``), so the
        guard needs no read: a mark recorded since makes the save conflict, and the request decided again
        (``decided_before``) reads the token, refuses a family that is over and revokes what of it is still live
        (this one, the live end a bounded walk may have missed). None for the login's own refresh token, whose stream
        is the one rotated.
        """
        if token.family_id is None or token.family_id == token.id:
            return ()
        if not request.decided_before:
            return ((token.family_id, ROTATED_ONCE),)
        root = self.app.find(token.family_id, Token)  # a private copy: its mark and version are read together
        if root is None:  # every family begins with its login's refresh token, saved with the login
            raise InvalidGrant("the refresh token is invalid", reason=why.REFRESH_TOKEN_UNKNOWN).about(context)
        if root.family_over():  # a reuse was detected whose revocation did not reach this token: it does now
            self.end_family(token, reason=REUSE_DETECTED)
            raise InvalidGrant("the refresh token is revoked", reason=why.REFRESH_TOKEN_REVOKED).about(context)
        return ((root.id, root.version),)

    def refuse_reuse(self, token: Token, source: str | None) -> None:
        """Records the reuse, marks the family ended on its first refresh token, and revokes the family, in one
        transaction (``end_family``)."""

        def reuse_events() -> list[Token]:
            fresh = self.app.load(token.id, Token)
            if fresh.reuse_detected:  # a replay racing this one recorded it first (this save's retry sees it)
                return []
            fresh.detect_reuse(actor=SYSTEM_ACTOR, source=source)
            # The family's end is marked on its first refresh token as well: a walk on the streams while the model
            # lags is bounded (``Revoker.revoke_lineage``), and the refresh grant refuses whatever it did not reach.
            # (A replay of that token itself marks it so: ``Token.family_over``.)
            assert fresh.family_id is not None
            root = None if fresh.family_id == fresh.id else self.app.find(fresh.family_id, Token)
            if root is None or root.family_over():
                return [fresh]
            root.end_family(actor=SYSTEM_ACTOR)
            return [fresh, root]

        self.end_family(token, reason=REUSE_DETECTED, extra=reuse_events)

    def end_family(self, token: Token, *, reason: str, extra: Callable[[], Sequence[Token]] | None = None) -> None:
        """Revokes ``token``'s whole family, saving ``extra()`` in the same transaction.

        The family is selected on the token lookup model once it has applied what the selection needs
        (``Revoker.revoke_family``). If it lags past the wait, the family is revoked on the streams instead
        (``Revoker.revoke_lineage``): a replay answered 503 with nothing recorded left the family live, and a client
        that gives up on an error never presents the token again.
        """
        assert token.family_id is not None
        try:
            self.revoker.revoke_family(token.family_id, reason=reason, actor=SYSTEM_ACTOR, extra=extra,
                                       presented=token)
        except IndexLagging as exc:
            logger.warning("family revocation: %s; the family is revoked on its streams", exc)
            since = self.clock.now() - timedelta(seconds=self.lifetimes.dashboard_access_token_ttl)
            self.revoker.revoke_lineage(token, reason=reason, actor=SYSTEM_ACTOR, since=since, extra=extra)

    def find_user(self, email: str) -> User | None:
        """Returns the user registered with ``email``, through the email index."""
        index = self.app.find(email_index_id(email), EmailIndex, copy=False)
        return None if index is None else self.app.find(index.user_id, User, copy=False)

    def client_credentials_grant(self, client: Client, scope: str) -> IssuedTokens:
        """RFC 6749 section 4.4: a project's API key gets an access token for its own project."""
        now: datetime = self.clock.now()
        ttl = self.lifetimes.client_access_ttl(client.access_token_ttl)
        grant = Grant(grant_type=GrantType.CLIENT_CREDENTIALS, client_id=client.client_id,
                      project_id=client.project_id, user_id=None, scope=scope, actor=client_actor(client.client_id))
        access, access_agg, key_guard = self.mint.access_token(grant, now, ttl)
        return IssuedTokens(access_token=access, expires_in=ttl, scope=scope, refresh_token=None,
                            aggregates=(access_agg,), guards=((client.id, client.version), key_guard))


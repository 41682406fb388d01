"""Revocation: RFC 7009's endpoint, refresh-family revocation, and the bulk revocations of the management API.

A revocation is acknowledged once its TokenRevoked events are committed; the event store lists every revoked token
in that same transaction (``revoked_tokens``, written by the recorder), and every process that validates checks that
list as well as the token lookup model, so the token is refused from the moment the caller hears "revoked"
(invariant 1 of DESIGN.md) without waiting for the projection.
"""

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID, uuid4

from eventsourcing.persistence import IntegrityError

from application.oauth.errors import InvalidGrant, InvalidRequest
from application.ports import AccessTokenReader, Clock, CredentialMinter, Saver, SecretHasher, TokenIndex
from application.store import Keyledger
from domain.client import Client, PublicClient
from domain.ids import client_actor, login_access_token_id, refresh_token_aggregate_id
from domain.token import Token, TokenKind

# Each retry resolves one of the racing revocations of the same tokens (the group commit saves them one by one
# after a conflict): a refresh token presented by many requests at once needs as many rounds as it has racers.
ATTEMPTS = 16
REVOKED_BY_CLIENT = "revoked by client"  # the reason of an RFC 7009 revocation
# Revocations of more tokens than this are saved in a transaction of their own, not with the group commit's batch:
# the committer's thread issues every token of its process, and a client's 60,000 tokens held it (and the caller,
# past its 10 s wait, answered 503) for seconds. One transaction either way: a bulk revocation is never half-done.
GROUP_COMMIT_LIMIT = 1_000
# Ancestors of a reused token whose streams ``Revoker.revoke_lineage`` reads at most (a query each): a dashboard
# client refreshing every few seconds would otherwise make a lagging index cost a long walk up its family.
MAX_ANCESTORS = 64
# Generations of rotations ``Revoker.revoke_lineage`` follows down from a reused token (a query each). Every used
# token of a family can be replayed, each a detection of its own: unbounded, a family rotated N times would cost N
# squared over two reads while the index lags. 256 rotations is hours of a dashboard's use; a replay further behind
# the family's live end leaves that end to the next detection on a current index.
LINEAGE_GENERATIONS = 256


class IndexLagging(TimeoutError):
    """The token index did not apply the store's head within the wait: a selection on it would miss tokens."""


@dataclass(frozen=True, slots=True)
class Revoker:
    """Revokes sets of tokens selected on a read model that has applied what the selection needs: the store's head,
    or, for a family revoked from a live presented refresh token, that token's issuance (see ``revoke_family``); a
    reuse detection whose model lags past the wait decides on the streams instead (``revoke_lineage``)."""

    app: Keyledger
    clock: Clock
    index: TokenIndex
    save: Saver  # the group committer in a server: concurrent revocations share a transaction
    group_commit_limit: int = GROUP_COMMIT_LIMIT  # larger revocations are saved on their own (see the constant)
    lineage_generations: int = LINEAGE_GENERATIONS  # how far ``revoke_lineage`` walks down (see the constant)

    def head(self) -> int:
        """The store's last position."""
        return self.app.recorder.max_notification_id() or 0

    def revoke_ids(self, select: Callable[[], Sequence[UUID]], *, reason: str, actor: str,
                   extra: Callable[[], Sequence[object]] | None = None, selects_on_index: bool = True,
                   first: Sequence[Token] = (), follow_children: bool = False,
                   revocation_id: UUID | None = None, roots: Sequence[UUID] = (), wait: float = 5.0,
                   generations: int | None = None) -> int:
        """Revokes the live tokens ``select`` names (after the index caught up), saving ``extra()`` with them.

        Retries when a token changed meanwhile (a concurrent refresh adds a child: the retry revokes it too);
        ``extra`` is called again on each attempt, so its aggregates are fresh. ``first``: private copies of the
        tokens ``select`` names, already loaded by the caller, used by the first attempt instead of loading them
        again. ``follow_children``: also revoke the tokens each loaded refresh token was rotated into, as its own
        stream names them (see ``revoke_family``). Returns how many tokens this call revoked. Every token it revokes
        carries the same ``revocation_id`` (a new one unless given): the audit ledger groups a bulk revocation by it.
        ``roots``: tokens loaded with the selection, whose children ``follow_children`` follows. A token the
        selection did not name (a root, or one reached through a stream's children) is revoked only while it is
        live: a used refresh token stays used. An aggregate ``extra()`` returns is saved as it made it, never revoked
        here as well. ``wait``: seconds the selection waits at most for the index to catch up (a bulk command, whose
        own earlier transaction may have added tens of thousands of events, waits longer than a request).
        ``generations``: how many generations of children ``follow_children`` follows at most (None: all).
        """
        revocation_id = revocation_id or uuid4()
        for attempt in range(ATTEMPTS):
            if selects_on_index:  # the selection must see every token saved so far
                self.index.wait_for(self.head(), timeout=wait)
            now = self.clock.now()
            named = [t.id for t in first] if attempt == 0 and first else list(select())
            loaded = first if attempt == 0 and first else list(
                load_tokens(self.app, [*named, *roots], follow_children=follow_children,
                            generations=generations).values())
            others = extra() if extra is not None else ()
            saved_by_extra = {getattr(other, "id", None) for other in others}
            tokens = to_revoke([t for t in loaded if t.id not in saved_by_extra], named=set(named), now=now)
            if not tokens and not others:
                return 0
            try:
                if len(tokens) > self.group_commit_limit:
                    how = _Revocation(reason=reason, actor=actor, revocation_id=revocation_id, named=set(named),
                                      extra=extra)
                    return self._revoke_alone(tokens, others, how)
                for token in tokens:
                    token.revoke(reason=reason, actor=actor, revocation_id=revocation_id)
                self.save(*others, *tokens)
            except IntegrityError:
                continue
            # No wait for the lookup model: the store lists each revoked token in the transaction of its event.
            return len(tokens)
        raise TimeoutError("tokens kept changing while being revoked")

    def revoke_until_none(self, select: Callable[[], Sequence[UUID]], *, reason: str, actor: str,
                          revocation_id: UUID, wait: float, follow_children: bool = False) -> int:
        """``revoke_ids`` passes until one finds nothing to revoke; returns how many tokens they revoked.

        For a command after whose commit no token it targets can be issued any more (a client's ``ClientRevoked``, an
        account's ``UserDisabled``), but whose selection may precede tokens issued just before that commit: each
        pass waits for the index to reach the store's head first. Bounded: ``TimeoutError`` after ``ATTEMPTS``.
        """
        revoked = 0
        for _ in range(ATTEMPTS):
            found = self.revoke_ids(select, reason=reason, actor=actor, revocation_id=revocation_id, wait=wait,
                                    follow_children=follow_children)
            if not found:
                return revoked
            revoked += found
        raise TimeoutError("tokens kept appearing while being revoked")

    def _revoke_alone(self, tokens: Sequence[Token], others: Sequence[object], how: "_Revocation") -> int:
        """Saves a revocation too large for the group commit in a transaction of its own (``GROUP_COMMIT_LIMIT``).

        Loading and deciding tens of thousands of tokens takes seconds, and meanwhile some of their streams move:
        the expiry sweep records the end of those that reach their expiry, the client revokes or refreshes one. The
        save then conflicts as a whole. Deciding everything again on each conflict could starve the revocation: a
        client with a few hundred thousand live tokens sees the sweep (every 30 s) end some of them during every
        attempt, and its deletion, whose ``ClientRevoked`` is saved in the same transaction, would never commit. So
        a conflict decides again only the tokens whose streams moved, found with one query of the streams' versions
        (``Keyledger.versions``), and ``extra()``'s aggregates (a failed save consumed their events, and the conflict
        may have been theirs); then the save is tried again at once: still one transaction, never half-done. A moved
        token's children are followed (revoked while live), as they are for a family: a refresh token rotated
        meanwhile leaves a new pair the selection never named. Token events keep the time of their first decision.
        """
        events = {t.id: how.event_of(t) for t in tokens}
        for _ in range(ATTEMPTS):
            try:
                self.app.save(*others, *events.values())
            except IntegrityError:
                pass
            else:
                return len(events)
            versions = self.app.versions(list(events))
            moved = [i for i, e in events.items() if versions.get(i) != e.originator_version - 1]
            for token_id in moved:
                del events[token_id]
            others = how.extra() if how.extra is not None else ()  # the conflict may have been theirs
            saved_by_extra = {getattr(other, "id", None) for other in others}
            reloaded = load_tokens(self.app, moved, follow_children=True).values()
            for token in to_revoke([t for t in reloaded if t.id not in saved_by_extra], named=how.named,
                                   now=self.clock.now()):
                events.setdefault(token.id, how.event_of(token))
            for token_id in saved_by_extra & events.keys():
                del events[token_id]
        raise TimeoutError("tokens kept changing while being revoked")

    def revoke_family(self, family_id: UUID, *, reason: str, actor: str,
                      extra: Callable[[], Sequence[object]] | None = None, presented: Token | None = None) -> int:
        """Revokes every live access and refresh token of a login's family.

        The index names the family's tokens that were live when it was read; a refresh committed after that read
        (a request racing this one) has used up one of them and issued a new pair the selection lacks. The used
        token's own stream names that pair (``Token.children``), so the revocation follows it: without that, the
        rotated pair outlived an RFC 7009 revocation or a reuse detection that answered before it. An index that
        holds only part of a rotation (its runner may end a batch inside a transaction) still names the rotated
        token as live, since a rotation saves its ``TokenRefreshed`` after the new pair (``refresh_grant``). A
        rotation committed after the tokens were loaded conflicts with the revocation's save of the rotated token,
        and the retry sees it.

        ``presented``: the family's refresh token the request named (a logout's). While it is live, the index need
        not have applied the whole store, only that token's issuance: every token of the family issued later
        descends from it (only the family's live refresh token can rotate, and only once), and its current stream's
        children reach them (the pairs of any rotations racing this call). It and its parent are loaded as roots:
        a rotation saves the new refresh token before the new access token, and the index may hold the one and not
        the other, but the parent's stream names both; a login (no parent) saves its access token first
        (``TokenEndpoint.password_grant``), so the index holds it. A used token (a replay) is not a root: following
        the streams from it would walk every rotation since, a query each. Until the index holds the presented token,
        and for a used one or none, the index is first brought up to the store's head.
        """
        roots: list[UUID] = []
        if presented is not None and presented.is_live(self.clock.now()):
            roots = [i for i in (presented.id, presented.parent_id) if i is not None]

        def select() -> Sequence[UUID]:
            if roots:  # roots[0]: the live presented token
                selection = self.index.families_as_of([roots[0]]).get(roots[0])
                if selection is not None and selection.family_id == family_id:
                    return selection.live
            try:
                self.index.wait_for(self.head())
            except TimeoutError as exc:
                raise IndexLagging(str(exc)) from exc
            return self.index.live_in_family(family_id)

        return self.revoke_ids(select, reason=reason, actor=actor, extra=extra, selects_on_index=False,
                               follow_children=True, roots=roots)

    def revoke_lineage(self, token: Token, *, reason: str, actor: str, since: datetime,
                       extra: Callable[[], Sequence[object]] | None = None) -> int:
        """Revokes ``token``'s family without waiting for the index: each live token of it that the index lists as
        far as it has applied the store, and each one the streams reach from ``token`` and from its ancestors issued
        after ``since``.

        For a reuse detection whose index lags past the wait (a rebuild, a client deletion of tens of thousands of
        tokens): the detection must not go unrecorded, nor the family stay live, for want of a fresh index. What the
        index may lack was issued while it lagged: a later token of the family descends from ``token`` (a refresh
        token rotates once, so every rotation since ``token``'s continued its line), and its own stream names its
        children; or it is the access token issued with one of ``token``'s ancestors, named by that ancestor's
        parent's stream. ``since``: when the oldest access token that may still be live was issued (an ancestor
        issued before it has no live sibling), and the login's own, which no stream names: its id follows from the
        family's (``login_access_token_id``; a login older than that rule is found only if the index has applied it).
        Every token is revoked only while live: the stale index still lists as active refresh tokens used since, and
        they stay used.

        Bounded: ``MAX_ANCESTORS`` up, ``lineage_generations`` down (a query each). Not reached: older ancestors'
        access tokens past the bound up; the family's live end past the bound down (then left to a detection on a
        current index).
        """
        assert token.family_id is not None
        roots, current = [token.id], token
        while current.parent_id is not None and current.issued_at > since and len(roots) <= MAX_ANCESTORS:
            parent = self.app.find(current.parent_id, Token, copy=False)
            if parent is None:
                break
            roots.append(parent.id)
            current = parent
        listed = [login_access_token_id(token.family_id), *self.index.live_in_family(token.family_id)]
        return self.revoke_ids(lambda: (), reason=reason, actor=actor, extra=extra, selects_on_index=False,
                               follow_children=True, roots=[*roots, *listed], generations=self.lineage_generations)

    def revoke_one(self, token: Token, *, reason: str, actor: str) -> int:
        """Revokes one token (a private copy, e.g. from ``TokenFinder.find``, that this call may change); a refresh
        token takes its family (and the family's access tokens) with it."""
        if token.kind == TokenKind.REFRESH and token.family_id is not None:
            return self.revoke_family(token.family_id, reason=reason, actor=actor, presented=token)
        return self.revoke_ids(lambda: [token.id], reason=reason, actor=actor, selects_on_index=False,
                               first=[token])


@dataclass(frozen=True, slots=True)
class _Revocation:
    """What a large revocation records for each of its tokens, and how it decides one again (``_revoke_alone``)."""

    reason: str
    actor: str
    revocation_id: UUID
    named: set[UUID]
    extra: Callable[[], Sequence[object]] | None

    def event_of(self, token: Token) -> Token.TokenRevoked:
        """The token's ``TokenRevoked``, built without applying it (the aggregate is not saved)."""
        return token.revocation(reason=self.reason, actor=self.actor, revocation_id=self.revocation_id)


def to_revoke(loaded: Iterable[Token], *, named: Collection[UUID], now: datetime) -> list[Token]:
    """The loaded tokens a revocation changes: each one the selection ``named`` while revoking it still changes
    anything, and any other (a root, a child reached through a stream) only while it is live, so a used refresh
    token the selection did not name stays ``used``."""
    return [t for t in loaded if t.revocable(now) and (t.id in named or t.is_live(now))]


def load_tokens(app: Keyledger, ids: Sequence[UUID], *, follow_children: bool,
                generations: int | None = None, first: Mapping[UUID, Token] | None = None) -> dict[UUID, Token]:
    """The tokens ``ids`` name (unknown ids skipped), read in one query, and, with ``follow_children``, every token
    their streams say they were rotated into (``Token.children``), transitively: one more query per generation, for
    at most ``generations`` of them (None: until none is left). ``first``: the tokens ``ids`` name, already read
    (an id it lacks has no stream), instead of the first query."""
    tokens: dict[UUID, Token] = {}
    seen: set[UUID] = set()
    pending = list(dict.fromkeys(ids))
    left = generations
    while pending:
        seen.update(pending)
        if first is not None:  # the first generation, read by the caller
            found, first = first, None
        else:
            found = app.find_many(pending, Token)
        loaded = [found[i] for i in pending if i in found]
        tokens.update((t.id, t) for t in loaded)
        if left is not None:
            if left <= 0:
                break
            left -= 1
        children = [c for t in loaded for c in t.children if c not in seen] if follow_children else []
        pending = list(dict.fromkeys(children))
    return tokens


@dataclass(frozen=True, slots=True)
class RevocationRequest:
    """RFC 7009 section 2.1."""

    token: str | None
    token_type_hint: str | None


@dataclass(frozen=True, slots=True)
class TokenFinder:
    """Finds the Token aggregate behind a presented credential, without trusting the type hint."""

    app: Keyledger
    minter: CredentialMinter
    secrets: SecretHasher
    access_tokens: AccessTokenReader

    def find(self, value: str, *, verify_exp: bool = True) -> Token | None:
        """Returns the token's aggregate, or None when the string is not a token of ours."""
        if self.minter.is_refresh_token(value):
            return self.app.find(refresh_token_aggregate_id(self.secrets.hash(value)), Token)
        try:
            claims = self.access_tokens.claims(value, verify_exp=verify_exp)
            token_id = UUID(str(claims["jti"]))
        except (ValueError, KeyError):
            return None
        return self.app.find(token_id, Token)


@dataclass(frozen=True, slots=True)
class RevocationEndpoint:
    """RFC 7009: a client revokes a token issued to it."""

    finder: TokenFinder
    revoker: Revoker

    def handle(self, client: Client | PublicClient, request: RevocationRequest) -> None:
        """Revokes the token, or does nothing for unknown, invalid or already revoked tokens (section 2.2).

        Raises:
            InvalidRequest: no token parameter.
            InvalidGrant: the token was issued to another client (section 2.1: the request is refused).
        """
        if not request.token:
            raise InvalidRequest("the token parameter is required")
        # Expired tokens need no revocation; unknown ones answer 200 like revoked ones.
        token = self.finder.find(request.token, verify_exp=False)
        if token is None:
            return
        if token.client_id != client.client_id:
            raise InvalidGrant("the token was not issued to this client")
        self.revoker.revoke_one(token, reason=REVOKED_BY_CLIENT, actor=client_actor(client.client_id))

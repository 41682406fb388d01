"""Sweep jobs: ``TokenExpired`` and ``ClientSecretExpired`` for what reached its expiry, the pruning of the
written-through revocation list, and the revocation of tokens a deleted client still has (an interrupted deletion).

See application/expiry.py and application/orphans.py for the decisions.
Registration only at import; the job functions build their commands from the worker's container when they run.
"""

import logging
from datetime import timedelta
from typing import Any

from application.expiry import SecretSweep, SweepResult, TokenSweep
from application.orphans import OrphanSweep
from projections.orphaned_tokens import OrphanedTokens
from workers.jobs import job
from workers.runtime import drain, log_line

logger = logging.getLogger("keyledger.jobs")

SWEEP_EVERY = 30.0
PRUNE_EVERY = 300.0
# How long past its token's expiry (by the database's clock) a revocation stays listed: hosts' clocks may run
# behind the database's, and a revoked token's row may have left the hot table (projections.token_expiry).
PRUNE_MARGIN = timedelta(minutes=5)


def token_sweep(container: Any, *, batch_size: int = 2000, max_batches: int = 100) -> TokenSweep:
    """The token sweep of a container (its application, clock and token lookup model)."""
    return TokenSweep(app=container.app, clock=container.tokens.clock, index=container.lookup, batch_size=batch_size,
                      max_batches=max_batches)


def secret_sweep(container: Any) -> SecretSweep:
    """The client-secret sweep of a container."""
    return SecretSweep(app=container.app, clock=container.tokens.clock, index=container.views["secret_expiry"])


@job("expire-tokens", every=SWEEP_EVERY, max_retries=3, time_limit=300_000, exclusive=True)
def expire_tokens(container: Any, **_: Any) -> None:
    """Records ``TokenExpired`` for due tokens, at most ``max_batches`` batches per run (the next run continues:
    a backlog after downtime drains run by run without any run outliving its time limit)."""
    result: SweepResult = token_sweep(container).run()
    logger.info(log_line(job="expire-tokens", expired=result.expired, batches=result.batches, more=result.more))


@job("expire-client-secrets", every=SWEEP_EVERY, max_retries=3, exclusive=True)
def expire_client_secrets(container: Any, **_: Any) -> None:
    """Records ``ClientSecretExpired`` for due client secrets (current ones, and previous ones after their grace)."""
    result = secret_sweep(container).run()
    logger.info(log_line(job="expire-client-secrets", expired=result.expired))


def prune_revocation_list(container: Any, *, margin: timedelta = PRUNE_MARGIN, batch_size: int = 5000,
                          max_batches: int = 100) -> tuple[int, bool]:
    """Deletes from ``revoked_tokens`` the entries of tokens expired more than ``margin`` ago by the database's
    clock, in batches; returns how many and whether more are left for the next run. (A negative margin looks
    ahead: tests use it instead of waiting.)"""
    return drain(lambda limit: container.lookup.prune_written_through(margin, limit), batch_size=batch_size,
                 max_batches=max_batches)


@job("prune-revocation-list", every=PRUNE_EVERY, max_retries=3, time_limit=300_000, exclusive=True)
def prune_revocations(container: Any, **_: Any) -> None:
    """Keeps the list every request reads small: a revoked token's entry goes once the token has expired (its
    ``exp`` refuses it from then on); its ``TokenRevoked`` and its lookup row stay (DESIGN.md invariant 1 holds)."""
    pruned, more = prune_revocation_list(container)
    logger.info(log_line(job="prune-revocation-list", pruned=pruned, more=more))


def orphan_sweep(container: Any, *, batch_size: int = 1000, max_batches: int = 20) -> OrphanSweep:
    """The orphan sweep of a container: candidates from its token lookup and clients models, revocations through
    its ``Revoker`` (the deletion's own path)."""
    return OrphanSweep(app=container.app, revoker=container.revoker,
                       index=OrphanedTokens(container.lookup, container.clients_view), batch_size=batch_size,
                       max_batches=max_batches)


@job("revoke-orphaned-tokens", every=SWEEP_EVERY, max_retries=3, time_limit=300_000, exclusive=True)
def revoke_orphaned_tokens(container: Any, **_: Any) -> None:
    """Revokes live tokens of deleted clients: a deletion whose process died after its transaction, before its late
    passes, left the tokens issued while it ran; this finishes it within a period. Logs counts only."""
    result = orphan_sweep(container).run()
    logger.info(log_line(job="revoke-orphaned-tokens", revoked=result.revoked, spared=result.spared,
                         batches=result.batches, more=result.more))

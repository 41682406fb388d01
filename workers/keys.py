"""The signing-key rotation job (see application/rotation.py), and how a container's rotation is built."""

import logging
from typing import Any

from application.ports import Clock
from application.rotation import KeyRotation, RotationPolicy
from domain.policy import MAX_ACCESS_TOKEN_TTL
from workers.jobs import job
from workers.runtime import log_line

logger = logging.getLogger("keyledger.jobs")

ROTATION_EVERY = 300.0


def rotation_policy(settings: Any) -> RotationPolicy:
    """The schedule from settings; a replaced key stays published for the longest access-token lifetime (and a
    margin)."""
    lifetimes = settings.lifetimes
    longest = max(lifetimes.dashboard_access_token_ttl, lifetimes.client_access_token_ttl, MAX_ACCESS_TOKEN_TTL)
    return RotationPolicy(rotation=settings.signing_key_rotation, prepublish=settings.signing_key_prepublish,
                          max_token_ttl=longest)


def key_rotation(container: Any, clock: Clock | None = None) -> KeyRotation:
    """The key rotation of a container (its application, key factory and settings)."""
    from infrastructure.bootstrap import signing_key_factory  # noqa: PLC0415 - workers import no infrastructure at load

    settings = container.settings
    return KeyRotation(app=container.app, keys=signing_key_factory(settings), clock=clock or container.tokens.clock,
                       algorithm=settings.signing_alg, policy=rotation_policy(settings))


@job("rotate-signing-keys", every=ROTATION_EVERY, max_retries=3)
def rotate_signing_keys(container: Any, **_: Any) -> None:
    """Takes the rotation steps that are due (create and pre-publish, activate, retire); usually none."""
    steps = key_rotation(container).run_schedule()
    # Logged before this process's key set is reloaded: the steps are committed, and a failed reload (the database
    # gone a moment) must not lose their only log line; the retry would find nothing left to do.
    logger.info(log_line(job="rotate-signing-keys", steps=[f"{s.action} {s.kid}" for s in steps]))
    if steps:
        container.keys.reload()

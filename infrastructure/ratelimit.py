"""The attempt limiter on Redis: failed-authentication counters shared by every API process.

Each key (an account, a client, a source address) is one Redis integer: the failures of the current window. It
expires ``window`` seconds after its first failure; the failure that reaches the key's limit re-arms it to expire
``lockout`` seconds later, and a key whose count is at its limit is locked until it expires. Every read-and-write
runs in a Lua script, so it is atomic across processes: ``reserve`` checks and counts in one step, and 40
concurrent wrong guesses admit exactly ``limit`` of them. Redis key names carry an HMAC of the key (server key),
never an email, client id or address in clear.

The key prefix separates deployments (and test servers) sharing one Redis: by default ``keyledger:`` plus the
event store's database name, since every process of one deployment shares that database.

Fail closed: when Redis does not answer, ``reserve`` and ``budget`` raise ``TemporarilyUnavailable`` (503) rather
than let guesses through uncounted; ``release`` and ``settle`` only log, because the verdict is already taken.
"""

import hashlib
import hmac
import logging
import math
from collections.abc import Iterable, Sequence
from typing import Any

import redis
from psycopg.conninfo import conninfo_to_dict

from application.oauth.errors import TemporarilyUnavailable
from application.oauth.limits import AttemptBudget, AttemptKey, AttemptLimits

logger = logging.getLogger(__name__)

# KEYS: the counters; ARGV: window ms, lockout ms, then each key's limit.
# Refuses (counting nothing) with the longest remaining lock if any key is at its limit, else counts one on each.
_RESERVE = """
local window, lockout = tonumber(ARGV[1]), tonumber(ARGV[2])
local wait = 0
for i, key in ipairs(KEYS) do
  if tonumber(redis.call('GET', key) or '0') >= tonumber(ARGV[i + 2]) then
    local ttl = redis.call('PTTL', key)
    if ttl < 0 then
      redis.call('PEXPIRE', key, lockout)
      ttl = lockout
    end
    wait = math.max(wait, ttl)
  end
end
if wait > 0 then
  return wait
end
for i, key in ipairs(KEYS) do
  local count = redis.call('INCR', key)
  if count == 1 then
    redis.call('PEXPIRE', key, window)
  end
  if count == tonumber(ARGV[i + 2]) then
    redis.call('PEXPIRE', key, lockout)
  end
end
return 0
"""

# KEYS: the counters; ARGV: window ms, lockout ms, then per key: limit, reset (1 clears the counter first), delta
# (failures to add, or -1 to uncount a released reservation).
_SETTLE = """
local window, lockout = tonumber(ARGV[1]), tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  local limit, reset, delta = tonumber(ARGV[3 * i]), ARGV[3 * i + 1], tonumber(ARGV[3 * i + 2])
  if reset == '1' then
    redis.call('DEL', key)
  end
  if delta > 0 then
    local count = redis.call('INCRBY', key, delta)
    if count == delta then
      redis.call('PEXPIRE', key, window)
    end
    if count >= limit and count - delta < limit then
      redis.call('PEXPIRE', key, lockout)
    end
  elseif delta < 0 and redis.call('EXISTS', key) == 1 then
    if redis.call('DECRBY', key, -delta) <= 0 then
      redis.call('DEL', key)
    end
  end
end
return 0
"""


def default_prefix(database_url: str) -> str:
    """``keyledger:`` and the event store's database name: shared by a deployment's processes, no one else's."""
    return "keyledger:" + (conninfo_to_dict(database_url).get("dbname") or "keyledger")


class RedisAttemptLimiter:
    """``AttemptLimiter`` on Redis (see the module docstring)."""

    def __init__(self, client: redis.Redis, limits: AttemptLimits, *, prefix: str, key: bytes) -> None:
        self._redis = client
        self._limits = limits
        self._prefix = prefix
        self._key = key
        self._reserve = client.register_script(_RESERVE)
        self._settle = client.register_script(_SETTLE)

    @property
    def limits(self) -> AttemptLimits:
        """The policy."""
        return self._limits

    def redis_key(self, key: AttemptKey) -> str:
        """The Redis key of a counter: prefix, kind and a keyed hash of the value (never the value itself)."""
        kind, value = key
        digest = hmac.new(self._key, f"{kind}\0{value}".encode(errors="surrogatepass"), hashlib.sha256)
        return f"{self._prefix}:attempts:{kind}:{digest.hexdigest()[:32]}"

    def reserve(self, keys: Sequence[AttemptKey]) -> int | None:
        """Refuses with the seconds until the lock ends, or counts one attempt against every key (atomically)."""
        if not keys:
            return None
        args = [self._limits.window * 1000, self._limits.lockout * 1000, *(self._limits.limit(k) for k in keys)]
        try:
            wait = int(self._reserve(keys=[self.redis_key(k) for k in keys], args=args))
        except redis.RedisError as exc:
            raise self._unavailable(exc) from None
        return math.ceil(wait / 1000) if wait > 0 else None

    def release(self, keys: Sequence[AttemptKey], *, reset: Sequence[AttemptKey] = ()) -> None:
        """Uncounts a reserved attempt from ``keys``; clears the counters of ``reset`` instead."""
        self._apply({key: (key in reset, 0 if key in reset else -1) for key in keys})

    def budget(self, keys: Iterable[AttemptKey]) -> AttemptBudget:
        """Reads every key's count with one MGET, and the remaining lock of locked keys (rare) with one more."""
        unique = {key: self.redis_key(key) for key in keys}
        budget = AttemptBudget(self._limits)
        if not unique:
            return budget
        try:
            values = self._redis.mget(list(unique.values()))
            budget.counts = {key: int(value) for key, value in zip(unique, values, strict=True) if value is not None}
            locked = [key for key, count in budget.counts.items() if count >= self._limits.limit(key)]
            if locked:
                with self._redis.pipeline(transaction=False) as pipe:
                    for key in locked:
                        pipe.pttl(unique[key])
                    ttls = pipe.execute()
                budget.waits = {key: math.ceil(ttl / 1000) for key, ttl in zip(locked, ttls, strict=True) if ttl > 0}
        except redis.RedisError as exc:
            raise self._unavailable(exc) from None
        return budget

    def settle(self, budget: AttemptBudget) -> None:
        """Clears the reset keys, then adds the batch's failures (one script call; none if nothing to write)."""
        ops = {key: (True, budget.failures[key]) for key in budget.resets}
        ops.update((key, (key in budget.resets, n)) for key, n in budget.failures.items() if n > 0)
        self._apply(ops)

    def _apply(self, ops: dict[AttemptKey, tuple[bool, int]]) -> None:
        if not ops:
            return
        args: list[Any] = [self._limits.window * 1000, self._limits.lockout * 1000]
        for key, (reset, delta) in ops.items():
            args += [self._limits.limit(key), "1" if reset else "0", delta]
        try:
            self._settle(keys=[self.redis_key(k) for k in ops], args=args)
        except redis.RedisError as exc:
            logger.warning("could not record authentication attempts: %s", type(exc).__name__)

    @staticmethod
    def _unavailable(exc: Exception) -> TemporarilyUnavailable:
        logger.warning("attempt limiter unavailable: %s", type(exc).__name__)
        return TemporarilyUnavailable("authentication is temporarily unavailable; try again shortly")

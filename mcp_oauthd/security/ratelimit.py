"""Token-bucket rate limiting, in memory or in Redis, behind one interface.

A bucket holds up to ``burst`` tokens and refills at ``per_minute / 60`` tokens a second;
each request takes one. An empty bucket answers with the seconds until a token is back,
which becomes ``Retry-After``.

- ``MemoryRateLimiter``: one process; an LRU of at most ``max_keys`` buckets, so a flood
  from many addresses cannot grow memory without bound.
- ``RedisRateLimiter``: shared by every replica; the whole take-or-refuse step runs in one
  Lua script (atomic), every bucket key expires when it would be full again. The scripts
  of concurrent requests share round trips (``CommandPipeliner``).

Time is passed in (``now``), never read here, so tests drive a fake clock.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Protocol

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from mcp_oauthd.config.models import Config, RedisStorageConfig
from mcp_oauthd.storage.base import StorageError, StorageUnavailable
from mcp_oauthd.storage.redis import CommandPipeliner


@dataclass(frozen=True)
class Budget:
    per_minute: float
    burst: int

    @functools.cached_property
    def rate(self) -> float:
        """Tokens a second (computed once: a budget is asked on every request)."""
        return self.per_minute / 60.0


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: int = 0  # whole seconds, at least 1 when refused
    first_refusal: bool = False  # this refusal starts a run of refusals (audit once)


ALLOWED = Decision(True)


class RateLimiter(Protocol):
    async def hit(self, key: str, budget: Budget, now: float) -> Decision:
        """Take one token from ``key``'s bucket."""

    async def close(self) -> None: ...


def _retry_after(missing: float, rate: float) -> int:
    return max(1, math.ceil(missing / rate)) if rate > 0 else 3600


class MemoryRateLimiter:
    def __init__(self, max_keys: int = 100_000) -> None:
        self.max_keys = max_keys
        # key -> (tokens, updated_at, refusing). A plain dict is an LRU here: a bucket is
        # popped and re-inserted on every take, so insertion order is recency order (and
        # dict operations cost less than OrderedDict's; `take` runs before every request).
        self._buckets: dict[str, tuple[float, float, bool]] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    async def hit(self, key: str, budget: Budget, now: float) -> Decision:
        return self.take(key, budget, now)

    def take(self, key: str, budget: Budget, now: float) -> Decision:
        """``hit`` without a coroutine: the request pipeline calls it on the hot paths."""
        buckets = self._buckets
        state = buckets.pop(key, None)
        if state is None:
            tokens: float = budget.burst
            refusing = False
        else:
            tokens, updated, refusing = state
            if now > updated:
                tokens = min(budget.burst, tokens + (now - updated) * budget.rate)
        if tokens >= 1.0:
            buckets[key] = (tokens - 1.0, now, False)  # re-inserted last: most recently used
            if len(buckets) > self.max_keys:
                self._evict()
            return ALLOWED
        self._store(key, (tokens, now, True))
        return Decision(False, _retry_after(1.0 - tokens, budget.rate), not refusing)

    def _evict(self) -> None:
        buckets = self._buckets
        while len(buckets) > self.max_keys:
            del buckets[next(iter(buckets))]  # the least recently used bucket

    def _store(self, key: str, value: tuple[float, float, bool]) -> None:
        self._buckets[key] = value
        self._evict()

    async def close(self) -> None:
        self._buckets.clear()


class NoRateLimiter:
    """Rate limiting switched off (``rate_limits.enabled: false``)."""

    async def hit(self, key: str, budget: Budget, now: float) -> Decision:
        return Decision(True)

    async def close(self) -> None:
        return None


# KEYS[1] bucket; ARGV: burst, rate (tokens/s), now (s), ttl (ms)
# Returns {allowed (0/1), tokens*1000 (int), first_refusal (0/1)}
_TOKEN_BUCKET = """
local burst = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 't', 'u', 'r')
local tokens = tonumber(state[1]) or burst
local updated = tonumber(state[2]) or now
local refusing = state[3] == '1'
local elapsed = now - updated
if elapsed < 0 then elapsed = 0 end
tokens = math.min(burst, tokens + elapsed * rate)
local allowed = 0
local first = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
  refusing = false
else
  if not refusing then first = 1 end
  refusing = true
end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'u', tostring(now), 'r', refusing and '1' or '0')
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {allowed, math.floor(tokens * 1000), first}
"""


class RedisRateLimiter:
    def __init__(self, redis: Redis, key_prefix: str) -> None:
        self._redis = redis
        self._prefix = f"{key_prefix}ratelimit:"
        self._script = redis.register_script(_TOKEN_BUCKET)
        # The hits go out pipelined with those of concurrent requests, on connections of
        # their own made with ``redis``'s settings (timeout, retry): redis-py's per-command
        # overhead would cost more CPU than the rest of a token request.
        self._pipe = CommandPipeliner(redis.connection_pool)

    async def hit(self, key: str, budget: Budget, now: float) -> Decision:
        # The bucket is full again after burst/rate seconds: let the key expire then.
        ttl_ms = max(1000, int(1000 * budget.burst / budget.rate)) if budget.rate > 0 else 3600_000
        try:
            result: Any = await self._pipe.run_script(
                self._script, [self._prefix + key], [budget.burst, budget.rate, now, ttl_ms]
            )
        except (RedisConnectionError, RedisTimeoutError):
            raise StorageUnavailable("redis unavailable during rate limiting") from None
        except RedisError:
            raise StorageError("redis error during rate limiting") from None
        allowed, tokens_milli, first = (int(x) for x in result)
        if allowed:
            return Decision(True)
        missing = 1.0 - tokens_milli / 1000.0
        return Decision(False, _retry_after(missing, budget.rate), bool(first))

    async def close(self) -> None:
        await self._pipe.aclose()
        await self._redis.aclose()


def build_rate_limiter(config: Config) -> RateLimiter:
    """In Redis when the storage is Redis (shared by replicas), in memory otherwise."""
    if not config.rate_limits.enabled:
        return NoRateLimiter()
    if isinstance(config.storage, RedisStorageConfig):
        # The hits use the pool's settings on the limiter's own pipelined connections
        # (``CommandPipeliner``). One retry, on a connection error only, reconnects a
        # connection that went stale (a Redis restart) instead of answering 503; never
        # after a timeout, when the script may have run (a bucket update is not
        # idempotent). Redis down stays a quick 503. The pool's own connections serve
        # nothing else; it is a blocking one so that any use with more requests in flight
        # than connections waits (up to ``timeout``) instead of failing with "Too many
        # connections", which would surface as a 503 under load.
        pool = BlockingConnectionPool.from_url(
            config.storage.url.get_secret_value(),
            socket_connect_timeout=2,
            socket_timeout=2,
            retry=Retry(NoBackoff(), 1, (RedisConnectionError,)),
            max_connections=32,
            timeout=2,
        )
        client: Redis = Redis.from_pool(pool)
        return RedisRateLimiter(client, config.storage.key_prefix)
    return MemoryRateLimiter(config.rate_limits.max_keys)

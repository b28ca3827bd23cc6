"""The Redis hot paths: auto-pipelined commands (``CommandPipeliner``) must stay exact.

Concurrent calls share round trips, so these check what batching could get wrong: every
caller gets its own reply (also around cancelled callers and per-command errors), the
connection count stays bounded, a lost script cache and a hanging or dead server fail
closed (``StorageUnavailable``) and recover. Needs a Redis at 127.0.0.1:6379; the script
flush and outage tests run a private ``redis-server``.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio import ConnectionPool
from redis.exceptions import DataError, ResponseError

from mcp_oauthd.security.ratelimit import Budget, RedisRateLimiter, build_rate_limiter
from mcp_oauthd.storage.base import RotateStatus, StorageError, StorageUnavailable
from mcp_oauthd.storage.redis import CommandPipeliner, RedisStorage
from mcp_oauthd.testing.redis_server import PrivateRedis
from mcp_oauthd.testing.storage_conformance import (
    NOW,
    create_full_grant,
    make_access,
    make_grant,
    rotate,
)
from tests.conftest import base_config
from tests.storage.redis_support import URL, make_storage, needs_redis

pytestmark = needs_redis


@pytest.fixture
def storage(redis_storage: RedisStorage) -> RedisStorage:
    return redis_storage


@pytest.fixture
async def pipeliner() -> AsyncIterator[CommandPipeliner]:
    pool = ConnectionPool.from_url(URL, decode_responses=True, socket_timeout=2)
    pipe = CommandPipeliner(pool, max_connections=2, max_batch=4)
    yield pipe
    await pipe.aclose()
    await pool.aclose()


# --------------------------------------------------------------------------- replies
async def test_hundreds_of_concurrent_reads_each_get_their_own_record(
    storage: RedisStorage,
) -> None:
    grant = make_grant()
    tokens = [make_access(grant) for _ in range(300)]
    await storage.create_grant(grant, tokens[0], None)
    await asyncio.gather(*(storage._cmd("seed", "SET", *_at(storage, t)) for t in tokens[1:]))
    hashes = [t.token_hash for t in tokens] + [f"missing-{i}" for i in range(100)]
    found = await asyncio.gather(*(storage.get_access_token(h) for h in hashes))
    assert found == [*tokens, *([None] * 100)]
    # Batches share a few connections instead of one per caller.
    assert 1 <= len(storage._pipe._idle) <= 8


def _at(storage: RedisStorage, token: Any) -> tuple[str, str]:
    return f"{storage._base}at:{token.token_hash}", token.model_dump_json()


async def test_batches_larger_than_the_cap_are_split_in_order(
    pipeliner: CommandPipeliner, prefix: str
) -> None:
    keys = [f"{prefix}k{i}" for i in range(50)]
    assert await asyncio.gather(*(pipeliner.execute("SET", k, k) for k in keys)) == ["OK"] * 50
    assert await asyncio.gather(*(pipeliner.execute("GET", k) for k in keys)) == keys
    assert len(pipeliner._idle) <= 2


async def test_an_error_reply_fails_its_caller_only(
    pipeliner: CommandPipeliner, prefix: str
) -> None:
    await pipeliner.execute("HSET", prefix + "hash", "f", "v")
    await pipeliner.execute("SET", prefix + "str", "s")
    results = await asyncio.gather(
        pipeliner.execute("GET", prefix + "str"),
        pipeliner.execute("GET", prefix + "hash"),  # WRONGTYPE
        pipeliner.execute("SET", prefix + "bad", None),  # type: ignore[arg-type]
        pipeliner.execute("GET", prefix + "str"),
        return_exceptions=True,
    )
    assert results[0] == results[3] == "s"
    assert isinstance(results[1], ResponseError)
    assert isinstance(results[2], DataError)
    assert await pipeliner.execute("GET", prefix + "str") == "s"  # still in step


async def test_a_wrong_type_is_a_storage_error_not_an_outage(storage: RedisStorage) -> None:
    key = f"{storage._base}at:wrong"
    await storage._cmd("seed", "HSET", key, "f", "v")
    with pytest.raises(StorageError) as info:
        await storage.get_access_token("wrong")
    assert not isinstance(info.value, StorageUnavailable)
    assert "wrong" not in str(info.value)


async def test_cancelled_callers_never_shift_the_replies_of_others(storage: RedisStorage) -> None:
    grant = make_grant()
    tokens = [make_access(grant) for _ in range(120)]
    await storage.create_grant(grant, tokens[0], None)
    await asyncio.gather(*(storage._cmd("seed", "SET", *_at(storage, t)) for t in tokens[1:]))
    for turns in range(5):  # cancel before the batch is written, and while it is read
        tasks = [asyncio.create_task(storage.get_access_token(t.token_hash)) for t in tokens]
        for _ in range(turns):
            await asyncio.sleep(0)
        for task in tasks[::3]:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for i, (token, result) in enumerate(zip(tokens, results, strict=True)):
            if i % 3:
                assert result == token
        found = await asyncio.gather(*(storage.get_access_token(t.token_hash) for t in tokens))
        assert found == tokens


# --------------------------------------------------------------------------- scripts
async def test_rotation_survives_a_flushed_script_cache(private_redis: PrivateRedis) -> None:
    storage = make_storage("oauthd:", url=private_redis.url)
    limiter = RedisRateLimiter(aioredis.Redis.from_url(private_redis.url), "oauthd:")
    raw = aioredis.Redis.from_url(private_redis.url)
    try:
        grant, _, refresh = await create_full_grant(storage)
        budget = Budget(per_minute=60, burst=2)
        assert (await limiter.hit("ip:1", budget, 1.0)).allowed
        await raw.script_flush()
        result, access, _ = await rotate(storage, refresh, grant, now=NOW + 1, grace=0)
        assert result.status is RotateStatus.ROTATED
        assert await storage.get_access_token(access.token_hash) == access
        assert (await limiter.hit("ip:1", budget, 1.0)).allowed
        assert not (await limiter.hit("ip:1", budget, 1.0)).allowed
    finally:
        await raw.aclose()
        await limiter.close()
        await storage.close()


# --------------------------------------------------------------------------- failures
async def test_a_server_that_never_answers_is_unavailable_within_the_deadline() -> None:
    held: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    storage = make_storage("oauthd:", url=f"redis://127.0.0.1:{port}/0", command_timeout=0.2)
    try:
        started = time.monotonic()
        results = await asyncio.gather(
            *(storage.get_access_token(f"h{i}") for i in range(20)), return_exceptions=True
        )
        assert all(isinstance(r, StorageUnavailable) for r in results), results
        # 1 try + 3 retries, 0.2 s each, plus the backoff: never the 2 s default.
        assert time.monotonic() - started < 4
    finally:
        await storage.close()
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_close_fails_calls_in_flight_as_unavailable() -> None:
    received = asyncio.Event()

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            received.set()  # the commands are on the wire: the calls are in flight
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    storage = make_storage("oauthd:", url=f"redis://127.0.0.1:{port}/0")
    try:
        calls = [asyncio.create_task(storage.get_access_token(f"h{i}")) for i in range(5)]
        await asyncio.wait_for(received.wait(), timeout=10)
        await storage.close()
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(r, StorageUnavailable) for r in results), results
    finally:
        server.close()
        await server.wait_closed()


async def test_the_rate_limiter_fails_closed_and_recovers_after_a_restart(
    private_redis: PrivateRedis,
) -> None:
    config = base_config(
        8080,
        storage={"type": "redis", "url": private_redis.url, "key_prefix": "oauthd:"},
        security={
            "encryption_keys": [
                {"id": "k1", "key": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()}
            ],
            "cookie_secret": secrets.token_urlsafe(32),
        },
    )
    limiter = build_rate_limiter(config)
    assert isinstance(limiter, RedisRateLimiter)
    budget = Budget(per_minute=600, burst=100)
    try:
        hits = await asyncio.gather(*(limiter.hit(f"ip:{i}", budget, 1.0) for i in range(50)))
        assert all(d.allowed for d in hits)
        private_redis.stop()
        with pytest.raises(StorageUnavailable):
            await limiter.hit("ip:1", budget, 2.0)
        private_redis.start()
        hits = await asyncio.gather(*(limiter.hit(f"ip:{i}", budget, 3.0) for i in range(50)))
        assert all(d.allowed for d in hits)
        # A restart while idle leaves the connections stale: one retry reconnects, no 503.
        private_redis.stop()
        private_redis.start()
        hits = await asyncio.gather(*(limiter.hit(f"ip:{i}", budget, 4.0) for i in range(50)))
        assert all(d.allowed for d in hits)
    finally:
        await limiter.close()

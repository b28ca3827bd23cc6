"""What the Redis test modules share: the test Redis, a storage under a fresh key prefix
(removed afterwards), and the ``prefix`` / ``redis_storage`` / ``private_redis`` fixtures
(registered for tests/storage by its conftest)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from mcp_oauthd.config.models import RedisStorageConfig
from mcp_oauthd.storage.redis import RedisStorage
from mcp_oauthd.testing.redis_server import PrivateRedis, redis_answers

URL = "redis://127.0.0.1:6379/0"

needs_redis = pytest.mark.skipif(
    not redis_answers(), reason="no Redis answers at 127.0.0.1:6379 (start one to run these)"
)


def new_prefix() -> str:
    return f"mcp-oauthd-test:{uuid.uuid4().hex}:"


async def delete_prefix(url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        async for key in client.scan_iter(match=prefix + "*", count=500):
            await client.delete(key)
    finally:
        await client.aclose()


def make_storage(prefix: str, url: str = URL, **kw: Any) -> RedisStorage:
    return RedisStorage(RedisStorageConfig(url=SecretStr(url), key_prefix=prefix), **kw)


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    value = new_prefix()
    yield value
    await delete_prefix(URL, value)


@pytest.fixture
async def redis_storage(prefix: str) -> AsyncIterator[RedisStorage]:
    backend = make_storage(prefix)
    await backend.open()
    yield backend
    await backend.close()


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    try:
        server = PrivateRedis()
    except FileNotFoundError:
        pytest.skip("redis-server is not installed")
    server.start()
    yield server
    server.stop()

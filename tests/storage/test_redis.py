"""The Redis backend: the shared conformance suite plus what only Redis can get wrong.

Needs a Redis at 127.0.0.1:6379 (skipped with a reason otherwise). Every test writes under
its own random prefix and deletes every key of that prefix at teardown. The outage test
runs a private ``redis-server`` on a free port and kills it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr
from redis.crc import key_slot

from mcp_oauthd.config.models import RedisStorageConfig
from mcp_oauthd.storage import build_storage
from mcp_oauthd.storage.base import (
    ConsumeStatus,
    GrantRevoked,
    RotateStatus,
    Storage,
    StorageUnavailable,
)
from mcp_oauthd.storage.redis import HASH_TAG, RedisStorage
from mcp_oauthd.testing.redis_server import PrivateRedis, free_port
from mcp_oauthd.testing.storage_conformance import (
    DAY,
    NOW,
    StorageConformance,
    create_full_grant,
    make_access,
    make_client,
    make_code,
    make_consent,
    make_grant,
    make_refresh,
    rotate,
)
from tests.storage.redis_support import (
    URL,
    delete_prefix,
    make_storage,
    needs_redis,
    new_prefix,
)

pytestmark = needs_redis


async def keys_of(prefix: str) -> list[str]:
    client = aioredis.Redis.from_url(URL, decode_responses=True)
    try:
        return [k async for k in client.scan_iter(match=prefix + "*", count=500)]
    finally:
        await client.aclose()


# --------------------------------------------------------------------------- conformance
class TestRedisStorage(StorageConformance):
    @pytest.fixture
    async def storage(self, redis_storage: RedisStorage) -> Storage:
        return redis_storage


# --------------------------------------------------------------------------- construction
def test_build_storage_makes_a_redis_backend_without_connecting() -> None:
    backend = build_storage(RedisStorageConfig(url=SecretStr("redis://127.0.0.1:1/0")))
    assert isinstance(backend, RedisStorage)
    assert backend.name == "redis"


# --------------------------------------------------------------------------- key layout
async def test_every_key_starts_with_the_prefix_and_shares_one_hash_slot(
    redis_storage: RedisStorage, prefix: str
) -> None:
    await populate(redis_storage)
    keys = await keys_of(prefix)
    assert len(keys) > 10
    assert all(k.startswith(prefix + HASH_TAG + ":") for k in keys)
    assert len({key_slot(k.encode()) for k in keys}) == 1


async def test_no_key_or_value_holds_a_plaintext_token_only_hashes(
    redis_storage: RedisStorage, prefix: str
) -> None:
    grant = make_grant()
    access = make_access(grant, token_hash="h-access")
    await redis_storage.create_grant(grant, access, make_refresh(grant, token_hash="h-refresh"))
    keys = await keys_of(prefix)
    assert any(k.endswith(":at:h-access") for k in keys)
    assert any(k.endswith(":rt:h-refresh") for k in keys)


async def populate(storage: RedisStorage) -> None:
    """One of everything, including a rotated token, a revoked grant and a tombstone."""
    await storage.put_client(make_client(expires_at=NOW + DAY))
    await storage.put_code(make_code())
    consumed = make_code()
    await storage.put_code(consumed)
    await storage.consume_code(consumed.code_hash, NOW + 1)
    grant, _, refresh = await create_full_grant(storage)
    await rotate(storage, refresh, grant, now=NOW + 10, grace=30)
    dead, _, _ = await create_full_grant(storage)
    await storage.revoke_grant(dead.grant_id, NOW + 20)
    await storage.revoke_grant("never-created", NOW + 20)
    await storage.update_grant_upstream(grant.grant_id, "v1.other", NOW + 99)
    await storage.put_consent(make_consent())
    await storage.put_ephemeral("authorize", "k", {"v": 1}, NOW + 600)


async def test_every_key_but_a_client_without_expiry_has_a_ttl(
    redis_storage: RedisStorage, prefix: str
) -> None:
    await populate(redis_storage)
    forever = make_client(expires_at=None)
    await redis_storage.put_client(forever)
    client = aioredis.Redis.from_url(URL, decode_responses=True)
    try:
        keys = await keys_of(prefix)
        ttls = {k: await client.ttl(k) for k in keys}
    finally:
        await client.aclose()
    no_ttl = sorted(k for k, ttl in ttls.items() if ttl <= 0)
    assert no_ttl == [f"{prefix}{HASH_TAG}:client:{forever.client_id}"]
    kinds = {k[len(prefix + HASH_TAG) + 1 :].split(":", 1)[0] for k in keys}
    assert kinds >= {"client", "cgrants", "code", "grant", "gtok", "at", "jti", "rt"}
    assert kinds >= {"consent", "eph"}


async def test_ttls_follow_the_record_lifetime_not_the_fake_clock(
    redis_storage: RedisStorage, prefix: str
) -> None:
    grant = make_grant(ttl=30 * DAY)
    access = make_access(grant, ttl=3600)
    await redis_storage.create_grant(grant, access, None)
    client = aioredis.Redis.from_url(URL, decode_responses=True)
    try:
        at_ttl = await client.ttl(f"{prefix}{HASH_TAG}:at:{access.token_hash}")
        grant_ttl = await client.ttl(f"{prefix}{HASH_TAG}:grant:{grant.grant_id}")
    finally:
        await client.aclose()
    assert 3600 < at_ttl <= 3600 + 300
    assert 30 * DAY < grant_ttl <= 30 * DAY + 300


# --------------------------------------------------------------------------- precision
async def test_timestamps_with_microseconds_survive_exactly(redis_storage: RedisStorage) -> None:
    now = 1_712_345_678.123456
    code = make_code(now=now)
    await redis_storage.put_code(code)
    result = await redis_storage.consume_code(code.code_hash, now + 0.000001)
    assert result.code is not None
    assert result.code.consumed_at == now + 0.000001

    grant, _, old = await create_full_grant(redis_storage, make_grant(now=now), now=now)
    rotated, _, _ = await rotate(redis_storage, old, grant, now=now + 0.1, grace=0.2)
    assert rotated.status is RotateStatus.ROTATED
    stored = await redis_storage.get_refresh_token(old.token_hash)
    assert stored is not None
    assert stored.rotated_at == now + 0.1
    # The grace boundary is compared exactly, in Lua, as Python would.
    at_edge, _, _ = await rotate(redis_storage, old, grant, now=now + 0.1 + 0.2, grace=0.2)
    expected = RotateStatus.GRACE if (now + 0.1 + 0.2) - (now + 0.1) <= 0.2 else RotateStatus.REUSED
    assert at_edge.status is expected


# --------------------------------------------------------------------------- replicas
async def test_fifty_consumes_spread_over_two_replicas_have_exactly_one_winner(
    prefix: str,
) -> None:
    a, b = make_storage(prefix), make_storage(prefix)
    await a.open()
    await b.open()
    try:
        code = make_code()
        await a.put_code(code)
        results = await asyncio.gather(
            *((a if i % 2 else b).consume_code(code.code_hash, NOW + 1) for i in range(50))
        )
        statuses = [r.status for r in results]
        assert statuses.count(ConsumeStatus.OK) == 1
        assert statuses.count(ConsumeStatus.REUSED) == 49
    finally:
        await a.close()
        await b.close()


async def test_a_grant_revoked_on_one_replica_is_dead_on_the_other(prefix: str) -> None:
    a, b = make_storage(prefix), make_storage(prefix)
    await a.open()
    await b.open()
    try:
        grant, access, refresh = await create_full_grant(a)
        assert await b.get_access_token(access.token_hash) == access
        assert await b.revoke_grant(grant.grant_id, NOW + 1) is True
        assert await a.get_access_token(access.token_hash) is None
        result, _, _ = await rotate(a, refresh, grant, now=NOW + 2, grace=30)
        assert result.status is RotateStatus.MISSING
    finally:
        await a.close()
        await b.close()


async def test_two_prefixes_never_see_each_others_records(prefix: str) -> None:
    other_prefix = new_prefix().replace(":", "[*]?:", 1)  # glob characters are escaped
    a, b = make_storage(prefix), make_storage(other_prefix)
    await a.open()
    await b.open()
    try:
        await a.put_client(make_client())
        await create_full_grant(a)
        assert await b.list_clients() == []
        assert await b.list_grants() == []
        assert await b.gc(NOW + 365 * DAY) == 0
        assert len(await a.list_clients()) == 1
    finally:
        await a.close()
        await b.close()
        await delete_prefix(URL, other_prefix.replace("[", "\\[").replace("*", "\\*"))


# --------------------------------------------------------------------------- retries
async def test_a_retried_consume_recognises_its_own_first_run(
    redis_storage: RedisStorage, prefix: str
) -> None:
    """A timeout after the server ran the script must not turn the winner into REUSED."""
    code = make_code()
    await redis_storage.put_code(code)
    key = f"{prefix}{HASH_TAG}:code:{code.code_hash}"
    script = redis_storage._consume_code
    first = await script(keys=[key], args=[repr(NOW + 1), "nonce-1"])
    retried = await script(keys=[key], args=[repr(NOW + 1), "nonce-1"])
    other = await script(keys=[key], args=[repr(NOW + 1), "nonce-2"])
    assert (first[0], retried[0], other[0]) == ("ok", "ok", "reused")


async def test_a_retried_rotation_recognises_its_own_first_run(
    redis_storage: RedisStorage,
) -> None:
    grant, _, old = await create_full_grant(redis_storage)
    access, refresh = make_access(grant), make_refresh(grant)
    args = [
        redis_storage._base,
        old.token_hash,
        repr(NOW + 100),
        repr(0.0),
        "successor",
        "nonce-1",
        "86400",
        repr(NOW + 100 + 86400),
        *redis_storage._access_args(access),
        *redis_storage._refresh_args(refresh),
    ]
    key = f"{redis_storage._base}rt:{old.token_hash}"
    first = await redis_storage._rotate(keys=[key], args=args)
    retried = await redis_storage._rotate(keys=[key], args=args)
    assert (first[0], retried[0]) == ("rotated", "rotated")
    found = await redis_storage.get_grant(grant.grant_id)
    assert found is not None
    assert found.revoked_at is None
    assert await redis_storage.get_refresh_token(refresh.token_hash) == refresh


# --------------------------------------------------------------------------- gc
async def test_gc_drops_dead_index_members_and_dangling_jti_pointers(
    redis_storage: RedisStorage, prefix: str
) -> None:
    grant, access, refresh = await create_full_grant(redis_storage)
    base = prefix + HASH_TAG + ":"
    client = aioredis.Redis.from_url(URL, decode_responses=True)
    try:
        # As if Redis had expired the token and grant keys by TTL.
        await client.delete(base + "at:" + access.token_hash, base + "grant:" + grant.grant_id)
        assert await redis_storage.gc(NOW) == 0  # nothing expired by the caller's clock
        assert await client.smembers(base + "gtok:" + grant.grant_id) == {"r:" + refresh.token_hash}
        assert not await client.exists(base + "jti:" + access.jti)
        assert not await client.exists(base + "cgrants:" + grant.client_id)
    finally:
        await client.aclose()


async def test_gc_counts_every_expired_record_like_the_memory_backend(
    redis_storage: RedisStorage,
) -> None:
    from mcp_oauthd.storage.memory import MemoryStorage

    async def fill(storage: Storage) -> None:
        await storage.put_code(make_code(code_hash="c1", ttl=10))
        await storage.put_code(make_code(code_hash="c2", ttl=10_000))
        grant = make_grant(grant_id="g1", ttl=100)
        await storage.create_grant(
            grant, make_access(grant, token_hash="a1"), make_refresh(grant, token_hash="r1")
        )
        await storage.revoke_grant("ghost", NOW)
        await storage.put_ephemeral("x", "y", {}, NOW + 5)
        await storage.put_consent(make_consent(ttl=5))

    memory = MemoryStorage()
    await fill(memory)
    await fill(redis_storage)
    for when in (NOW + 20, NOW + 4000, NOW + 2 * DAY):
        assert await redis_storage.gc(when) == await memory.gc(when)


# --------------------------------------------------------------------------- create/revoke
async def test_create_grant_twice_with_one_id_is_an_error_not_a_silent_overwrite(
    redis_storage: RedisStorage,
) -> None:
    from mcp_oauthd.storage.base import StorageError

    grant, access, _ = await create_full_grant(redis_storage)
    with pytest.raises(StorageError) as info:
        await redis_storage.create_grant(grant, make_access(grant), None)
    assert not isinstance(info.value, GrantRevoked)
    assert await redis_storage.get_access_token(access.token_hash) == access


async def test_fifty_concurrent_revocations_and_one_creation_leave_nothing_live(
    redis_storage: RedisStorage,
) -> None:
    grant = make_grant()
    access, refresh = make_access(grant), make_refresh(grant)
    ops: list[Any] = [redis_storage.revoke_grant(grant.grant_id, NOW) for _ in range(25)]
    ops.append(redis_storage.create_grant(grant, access, refresh))
    ops += [redis_storage.revoke_grant(grant.grant_id, NOW) for _ in range(25)]
    results = await asyncio.gather(*ops, return_exceptions=True)
    assert sum(r is True for r in results) <= 1
    assert await redis_storage.get_access_token(access.token_hash) is None
    assert await redis_storage.get_refresh_token(refresh.token_hash) is None


# --------------------------------------------------------------------------- outage
async def test_an_outage_raises_storage_unavailable_and_the_same_object_recovers(
    private_redis: PrivateRedis,
) -> None:
    port = private_redis.port
    url = f"redis://:hunter2-secret@127.0.0.1:{port}/0"
    # The private server has no password; redis-py 8 sends AUTH, so use a password-less
    # URL for the real connection and check the message scrubbing separately below.
    storage = make_storage("oauthd:", url=f"redis://127.0.0.1:{port}/0")
    await storage.open()
    try:
        grant, access, refresh = await create_full_grant(storage)
        code = make_code()
        await storage.put_code(code)
        assert await storage.get_access_token(access.token_hash) == access

        private_redis.stop()

        with pytest.raises(StorageUnavailable) as info:
            await storage.get_access_token(access.token_hash)
        assert access.token_hash not in str(info.value)
        with pytest.raises(StorageUnavailable):
            await storage.consume_code(code.code_hash, NOW)
        with pytest.raises(StorageUnavailable):
            await rotate(storage, refresh, grant, now=NOW + 1, grace=0)
        with pytest.raises(StorageUnavailable):
            await storage.list_grants()
        with pytest.raises(StorageUnavailable):
            await storage.ping()

        private_redis.start()  # same port, empty data set, no scripts loaded

        await storage.ping()
        assert await storage.get_access_token(access.token_hash) is None  # data was lost
        fresh = make_code()
        await storage.put_code(fresh)
        assert (await storage.consume_code(fresh.code_hash, NOW)).status is ConsumeStatus.OK
        grant2, _, refresh2 = await create_full_grant(storage)
        result, _, _ = await rotate(storage, refresh2, grant2, now=NOW + 1, grace=0)
        assert result.status is RotateStatus.ROTATED
    finally:
        await storage.close()

    dead = make_storage("oauthd:", url=url.replace(str(port), str(free_port())))
    try:
        with pytest.raises(StorageUnavailable) as info:
            await dead.get_access_token("a-token-hash")
        message = str(info.value)
        assert "hunter2" not in message
        assert "a-token-hash" not in message
    finally:
        await dead.close()


async def test_open_and_ping_raise_storage_unavailable_when_nothing_listens() -> None:
    storage = make_storage("oauthd:", url=f"redis://127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(StorageUnavailable):
            await storage.open()
        with pytest.raises(StorageUnavailable):
            await storage.ping()
    finally:
        await storage.close()

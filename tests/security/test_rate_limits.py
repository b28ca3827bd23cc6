"""Rate limits: token buckets per IP and per user, in memory and in Redis; 429 + Retry-After."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from mcp_oauthd.config.models import ProxyConfig
from mcp_oauthd.http.client_ip import resolve
from mcp_oauthd.security.ratelimit import Budget, MemoryRateLimiter, RateLimiter, RedisRateLimiter
from tests.flows.conftest import Daemon

BUDGET = Budget(per_minute=60, burst=3)  # one token a second, three at once


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[RateLimiter]:
    if request.param == "memory":
        yield MemoryRateLimiter()
        return
    client: Redis = Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        await client.ping()
    except Exception:  # pragma: no cover - CI has Redis
        pytest.skip("no Redis at 127.0.0.1:6379")
    prefix = f"mcp-oauthd-test:{uuid.uuid4().hex}:"
    yield RedisRateLimiter(client, prefix)
    keys = [k async for k in client.scan_iter(match=prefix + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def test_a_bucket_allows_its_burst_then_refuses_with_retry_after(
    limiter: RateLimiter,
) -> None:
    now = 1000.0
    for _ in range(3):
        assert (await limiter.hit("ip:1", BUDGET, now)).allowed
    refused = await limiter.hit("ip:1", BUDGET, now)
    assert not refused.allowed
    assert refused.retry_after == 1
    assert refused.first_refusal
    again = await limiter.hit("ip:1", BUDGET, now)
    assert not again.allowed
    assert not again.first_refusal  # audited once per run of refusals


async def test_a_bucket_refills_with_time(limiter: RateLimiter) -> None:
    now = 1000.0
    for _ in range(4):
        await limiter.hit("ip:2", BUDGET, now)
    assert (await limiter.hit("ip:2", BUDGET, now + 1.0)).allowed
    assert not (await limiter.hit("ip:2", BUDGET, now + 1.0)).allowed


async def test_buckets_are_separate_per_key(limiter: RateLimiter) -> None:
    for _ in range(4):
        await limiter.hit("ip:a", BUDGET, 5.0)
    assert (await limiter.hit("ip:b", BUDGET, 5.0)).allowed


async def test_the_memory_limiter_is_bounded_under_a_flood_of_addresses() -> None:
    limiter = MemoryRateLimiter(max_keys=1000)
    for i in range(20_000):
        await limiter.hit(f"ip:{i}", BUDGET, 1.0)
    assert len(limiter) == 1000


async def test_the_memory_limiter_evicts_the_least_recently_used_bucket_first() -> None:
    limiter = MemoryRateLimiter(max_keys=2)
    budget = Budget(per_minute=60, burst=2)
    for _ in range(2):  # "busy" is empty now
        assert limiter.take("busy", budget, 1.0).allowed
    limiter.take("idle", budget, 1.0)
    limiter.take("busy", budget, 1.0)  # refused, and the most recently used again
    limiter.take("new", budget, 1.0)  # evicts "idle", not "busy"
    assert len(limiter) == 2
    assert not limiter.take("busy", budget, 1.0).allowed  # its empty bucket was kept


async def test_the_token_endpoint_answers_429_with_retry_after(daemon_factory: Any) -> None:
    daemon: Daemon = await daemon_factory(rate_limits={"token": {"per_minute": 6, "burst": 2}})
    statuses = []
    headers: Any = None
    for _ in range(4):
        status, body, headers = await daemon.token({"grant_type": "refresh_token"})
        statuses.append(status)
    assert statuses[:2] == [401, 401]  # no client credentials: invalid_client
    assert statuses[2:] == [429, 429]
    assert headers["Retry-After"] == "10"
    assert body["error"] == "slow_down"
    assert len(daemon.events("rate_limited")) == 1


async def test_login_attempts_are_limited_per_user(daemon_factory: Any) -> None:
    daemon: Daemon = await daemon_factory(rate_limits={"login_user": {"per_minute": 1, "burst": 2}})
    statuses = []
    for _ in range(3):
        hop, _ = await daemon.login(password="wrong")
        statuses.append(hop.status)
    assert statuses == [401, 401, 429]
    assert daemon.events("rate_limited")[0]["limiter"] == "login_user"


async def test_health_probes_are_never_limited(daemon_factory: Any) -> None:
    daemon: Daemon = await daemon_factory(rate_limits={"default": {"per_minute": 1, "burst": 1}})
    for _ in range(5):
        async with daemon.http.get(daemon.url + "/healthz") as resp:
            assert resp.status == 200
    async with daemon.http.get(daemon.url + "/.well-known/oauth-authorization-server") as r1:
        assert r1.status == 200
    async with daemon.http.get(daemon.url + "/.well-known/oauth-authorization-server") as r2:
        assert r2.status == 429


def test_forwarded_for_is_ignored_without_trusted_proxies() -> None:
    assert resolve("203.0.113.9", "1.2.3.4", ProxyConfig()) == "203.0.113.9"


def test_a_trusted_hop_count_picks_the_client_address() -> None:
    proxy = ProxyConfig(trusted_hops=1)
    # The client forged a first entry; our one proxy appended the real client address.
    assert resolve("10.0.0.5", "6.6.6.6, 198.51.100.7", proxy) == "198.51.100.7"


def test_trusted_networks_skip_only_our_own_proxies() -> None:
    proxy = ProxyConfig(trusted_cidrs=["10.0.0.0/8"])
    assert resolve("10.0.0.5", "6.6.6.6, 198.51.100.7, 10.1.1.1", proxy) == "198.51.100.7"
    # A peer outside the trusted networks is the client, whatever it claims.
    assert resolve("198.51.100.8", "1.1.1.1", proxy) == "198.51.100.8"


async def test_the_hot_path_budget_stays_in_process_even_with_a_shared_limiter(
    http: Any,
) -> None:
    """Introspection/verify never pay a (Redis) round trip for their abuse ceiling; every
    other endpoint uses the shared limiter."""
    from mcp_oauthd.app import create_app
    from mcp_oauthd.testing.daemon import running
    from tests.conftest import base_config, free_port

    class CountingLimiter(MemoryRateLimiter):
        def __init__(self) -> None:
            super().__init__()
            self.keys: list[str] = []

        async def hit(self, key: str, budget: Budget, now: float) -> Any:
            self.keys.append(key)
            return await super().hit(key, budget, now)

    port = free_port()
    config = base_config(port, rate_limits={"introspect": {"per_minute": 1, "burst": 1}})
    shared = CountingLimiter()
    async with running(create_app(config, rate_limiter=shared), port) as url:
        headers = {"X-Auth-Resource": config.default_resource.uri}
        statuses = []
        for _ in range(2):
            async with http.get(url + "/auth/verify", headers=headers) as resp:
                statuses.append(resp.status)
        async with http.get(url + "/.well-known/oauth-authorization-server") as resp:
            assert resp.status == 200
    assert statuses == [401, 429]
    assert [key.split(":")[0] for key in shared.keys] == ["default"]

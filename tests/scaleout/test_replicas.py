"""Several replicas on one Redis: any replica finishes a flow another began; a Redis outage
denies instead of allowing, and recovery needs no restart."""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from mcp_oauthd.app import create_app
from mcp_oauthd.clock import FakeClock
from mcp_oauthd.config.models import Config
from mcp_oauthd.security.audit import Auditor
from mcp_oauthd.testing import flow
from mcp_oauthd.testing.browser import ScriptedBrowser
from mcp_oauthd.testing.daemon import running
from mcp_oauthd.testing.redis_server import PrivateRedis, redis_answers
from tests.conftest import DEMO_PASSWORD, base_config, free_port
from tests.scaleout.support import on, tokens_across

pytestmark = pytest.mark.skipif(not redis_answers(), reason="no Redis at 127.0.0.1:6379")


def redis_config(port: int, url: str, prefix: str) -> Config:
    key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    return base_config(
        port,
        storage={"type": "redis", "url": url, "key_prefix": prefix},
        security={
            "encryption_keys": [{"id": "k1", "key": key}],
            "cookie_secret": secrets.token_urlsafe(32),
        },
    )


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    value = f"mcp-oauthd-test:{uuid.uuid4().hex}:"
    yield value
    client: Redis = Redis.from_url("redis://127.0.0.1:6379/0")
    keys = [k async for k in client.scan_iter(match=value + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def test_a_flow_hops_between_two_replicas_and_state_is_shared(
    prefix: str, http: aiohttp.ClientSession
) -> None:
    port_a, port_b = free_port(), free_port()
    config = redis_config(port_a, "redis://127.0.0.1:6379/0", prefix)
    clock = FakeClock()
    auditor_a, auditor_b = Auditor(), Auditor()
    app_a = create_app(config, clock=clock, auditor=auditor_a)
    app_b = create_app(config, clock=clock, auditor=auditor_b)
    async with running(app_a, port_a) as a, running(app_b, port_b):
        tokens = await tokens_across(http, a, port_a, port_b)
        refresh = {"grant_type": "refresh_token", "client_id": "cli"}
        status, second, _ = await flow.token_request(  # refresh on A
            http, a, {**refresh, "refresh_token": tokens["refresh_token"]}
        )
        assert status == 200, second
        # A replay of the rotated token after the grace window, detected on B ...
        clock.advance(60)
        status, body, _ = await flow.token_request(
            http, on(port_b, a), {**refresh, "refresh_token": tokens["refresh_token"]}
        )
        assert (status, body["error"]) == (400, "invalid_grant")
        assert auditor_b.find("refresh.reused")
        # ... is honoured on A: the whole family is dead there too.
        status, body, _ = await flow.token_request(
            http, a, {**refresh, "refresh_token": second["refresh_token"]}
        )
        assert (status, body["error"]) == (400, "invalid_grant")


async def test_revocation_on_one_replica_is_seen_by_the_other(
    prefix: str, http: aiohttp.ClientSession
) -> None:
    port_a, port_b = free_port(), free_port()
    config = redis_config(port_a, "redis://127.0.0.1:6379/0", prefix)
    app_a, app_b = create_app(config), create_app(config)
    async with running(app_a, port_a) as a, running(app_b, port_b):
        tokens = await flow.tokens(http, a, username="alice", password=DEMO_PASSWORD)
        async with http.post(
            on(port_b, a) + "/oauth/revoke",
            data={"token": tokens["refresh_token"], "client_id": "cli"},
        ) as resp:
            assert resp.status == 200
        status, body, _ = await flow.token_request(
            http,
            a,
            {
                "grant_type": "refresh_token",
                "client_id": "cli",
                "refresh_token": tokens["refresh_token"],
            },
        )
        assert (status, body["error"]) == (400, "invalid_grant")


async def test_a_redis_outage_answers_503_and_recovers_without_a_restart(
    http: aiohttp.ClientSession,
) -> None:
    try:
        server = PrivateRedis()
    except FileNotFoundError:
        pytest.skip("redis-server is not installed")
    server.start()
    port = free_port()
    config = redis_config(port, server.url, "outage:")
    try:
        async with running(create_app(config), port) as url:
            tokens = await flow.tokens(http, url, username="alice", password=DEMO_PASSWORD)
            server.stop()

            async with http.get(url + "/readyz") as resp:
                assert resp.status == 503
                assert resp.headers["Retry-After"]
            status, body, headers = await flow.token_request(
                http,
                url,
                {
                    "grant_type": "refresh_token",
                    "client_id": "cli",
                    "refresh_token": tokens["refresh_token"],
                },
            )
            assert (status, body["error"]) == (503, "temporarily_unavailable")
            assert headers["Retry-After"]
            hop = await ScriptedBrowser(http).get(flow.authorize_url(url, code_challenge="a" * 43))
            assert hop.status == 503
            assert "Traceback" not in hop.text

            server.start()  # same port, empty data: the daemon reconnects by itself
            async with http.get(url + "/readyz") as resp:
                assert resp.status == 200
            fresh = await flow.tokens(http, url, username="alice", password=DEMO_PASSWORD)
            assert fresh["access_token"]
    finally:
        server.stop()


def test_redis_storage_without_shared_keys_is_refused_with_the_fix() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as info:
        base_config(8080, storage={"type": "redis"})
    assert "security.encryption_keys" in str(info.value)
    assert "generate them" in str(info.value)


async def test_the_rate_limits_are_shared_by_replicas(prefix: str, http: Any) -> None:
    port_a, port_b = free_port(), free_port()
    config = redis_config(port_a, "redis://127.0.0.1:6379/0", prefix)
    config = config.model_copy(
        update={
            "rate_limits": config.rate_limits.model_copy(
                update={
                    "token": config.rate_limits.token.model_copy(
                        update={"per_minute": 1.0, "burst": 2}
                    )
                }
            )
        }
    )
    async with running(create_app(config), port_a) as a, running(create_app(config), port_b):
        statuses = []
        for target in (a, on(port_b, a), a):
            status, _, _ = await flow.token_request(http, target, {"grant_type": "x"})
            statuses.append(status)
    assert statuses[-1] == 429

"""Two mcp-oauthd processes on one Redis, as behind a load balancer: a flow begun on one
finishes on the other, and a refresh-token replay detected on one is honoured on the other."""

from __future__ import annotations

import asyncio
import base64
import secrets
import signal
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from redis.asyncio import Redis

from mcp_oauthd.testing import flow
from mcp_oauthd.testing.redis_server import redis_answers
from tests.conftest import free_port
from tests.processes import write_config
from tests.scaleout.support import on, tokens_across

pytestmark = pytest.mark.skipif(not redis_answers(), reason="no Redis at 127.0.0.1:6379")


async def test_two_processes_on_one_redis_finish_each_others_flows(
    tmp_path: Path, spawn: Any, http: aiohttp.ClientSession
) -> None:
    port_a, port_b = free_port(), free_port()
    prefix = f"mcp-oauthd-test:{uuid.uuid4().hex}:"
    shared = {
        "storage": {"type": "redis", "url": "redis://127.0.0.1:6379/0", "key_prefix": prefix},
        "security": {
            "encryption_keys": [
                {"id": "k1", "key": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()}
            ],
            "cookie_secret": secrets.token_urlsafe(32),
        },
        # Short grace so the replay below is outside it without waiting long.
        "tokens": {"refresh_grace_period": 0},
    }
    config_a = write_config(tmp_path, port_a, **shared)
    text = yaml.safe_load(config_a.read_text())
    text["server"]["port"] = port_b  # same issuer (the load balancer's), other listener
    config_b = tmp_path / "b.yaml"
    config_b.write_text(yaml.safe_dump(text))
    try:
        a_proc = await spawn("serve", "--config", str(config_a))
        b_proc = await spawn("serve", "--config", str(config_b))
        await a_proc.wait_for("ready")
        await b_proc.wait_for("ready")
        a = f"http://127.0.0.1:{port_a}"

        tokens = await tokens_across(http, a, port_a, port_b)
        refresh = {"grant_type": "refresh_token", "client_id": "cli"}
        status, second, _ = await flow.token_request(
            http, a, {**refresh, "refresh_token": tokens["refresh_token"]}
        )
        assert status == 200
        # The replay is detected on A ...
        status, body, _ = await flow.token_request(
            http, a, {**refresh, "refresh_token": tokens["refresh_token"]}
        )
        assert (status, body["error"]) == (400, "invalid_grant")
        # ... and honoured on B: the successor is dead there too.
        status, body, _ = await flow.token_request(
            http, on(port_b, a), {**refresh, "refresh_token": second["refresh_token"]}
        )
        assert (status, body["error"]) == (400, "invalid_grant")
        for proc in (a_proc, b_proc):
            proc.proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.proc.wait(), 60) == 0
    finally:
        client: Redis = Redis.from_url("redis://127.0.0.1:6379/0")
        keys = [k async for k in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()

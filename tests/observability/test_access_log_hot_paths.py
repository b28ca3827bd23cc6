"""The access log skips successful per-request checks of resource servers by default
(the hot path), and always logs their failures."""

from __future__ import annotations

import io
import json
from typing import Any

from mcp_oauthd.config.models import LoggingConfig
from mcp_oauthd.observability.logging import configure_logging
from tests.daemon import Daemon


async def verify(daemon: Daemon, token: str) -> int:
    headers = {
        "Authorization": f"Bearer {token}",
        "X-Auth-Resource": daemon.config.default_resource.uri,
    }
    async with daemon.http.get(daemon.url + "/auth/verify", headers=headers) as resp:
        return resp.status


def access_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("logger") == "mcp_oauthd.access"]


async def test_successful_verifications_are_not_access_logged_by_default(daemon: Daemon) -> None:
    stream = io.StringIO()
    configure_logging(LoggingConfig(format="json"), stream=stream)
    token = (await daemon.tokens())["access_token"]
    assert await verify(daemon, token) == 200
    assert await verify(daemon, "mcpat_garbage") == 401
    verify_lines = [line for line in access_lines(stream) if line["path"] == "/auth/verify"]
    assert [line["status"] for line in verify_lines] == [401]
    # Everything else is logged as usual.
    assert any(line["path"] == "/oauth/token" for line in access_lines(stream))


async def test_the_hot_paths_can_be_access_logged_too(daemon_factory: Any) -> None:
    daemon: Daemon = await daemon_factory(logging={"format": "json", "access_log_hot_paths": True})
    stream = io.StringIO()
    configure_logging(daemon.config.logging, stream=stream)
    token = (await daemon.tokens())["access_token"]
    assert await verify(daemon, token) == 200
    verify_lines = [line for line in access_lines(stream) if line["path"] == "/auth/verify"]
    assert [line["status"] for line in verify_lines] == [200]

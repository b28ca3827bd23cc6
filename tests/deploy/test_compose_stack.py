"""deploy/docker-compose.yml's stack without Docker: its nginx.conf in a real nginx, its
mcp-oauthd config on a real Redis, the example MCP server in nginx mode, and the official
MCP SDK client registering itself, logging in as the demo user and calling a tool through
nginx. Then the operator CLI finds and revokes that grant with the same config.

Only what Docker would provide is swapped: service names for loopback ports, a private
Redis key prefix, the published port. Skipped without nginx or Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx2
import pytest
from mcp.client.auth.oauth2 import OAuthClientProvider

from mcp_oauthd.app import create_app
from mcp_oauthd.cli import main
from mcp_oauthd.config.loader import load_config
from mcp_oauthd.testing.daemon import running
from mcp_oauthd.testing.redis_server import redis_answers
from tests.conftest import free_port
from tests.mcp_sdk.support import BrowserUser, MemoryTokenStorage, client_metadata, serve_starlette
from tests.resource.examples import call_whoami, load_python_example, nginx_binary, running_nginx
from tests.storage.redis_support import delete_prefix, new_prefix

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
REDIS = "redis://127.0.0.1:6379/0"
REDIRECT = "http://127.0.0.1:5611/callback"

pytestmark = [
    pytest.mark.skipif(nginx_binary() is None, reason="nginx is not installed"),
    pytest.mark.skipif(not redis_answers(), reason="no Redis answers at 127.0.0.1:6379"),
]


def swap(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"the compose recipe no longer has {old!r}"
    return text.replace(old, new)


@dataclass
class ComposeStack:
    url: str  # what the compose file publishes (nginx)
    config_path: Path
    environ: dict[str, str]


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[ComposeStack]:
    port, daemon_port, mcp_port, metrics_port = (free_port() for _ in range(4))
    url = f"http://127.0.0.1:{port}"
    prefix = new_prefix()

    config_text = (DEPLOY / "compose" / "mcp-oauthd.yaml").read_text()
    config_text = swap(
        config_text, "host: 0.0.0.0\n  port: 8080", f"host: 127.0.0.1\n  port: {daemon_port}"
    )
    config_text = swap(config_text, 'key_prefix: "mcp-oauthd:"', f'key_prefix: "{prefix}"')
    config_text = swap(
        config_text, "port: 9464\n    host: 0.0.0.0", f"port: {metrics_port}\n    host: 127.0.0.1"
    )
    config_text = swap(config_text, "state_dir: /var/lib/mcp-oauthd", f"state_dir: {tmp_path}")
    config_path = tmp_path / "mcp-oauthd.yaml"
    config_path.write_text(config_text)
    environ = {
        # What deploy/.env (compose/make-env.py) and docker-compose.yml provide.
        "MCP_OAUTHD_ENCRYPTION_KEY": "bmV3LWtleS1uZXcta2V5LW5ldy1rZXktbmV3LWtleSE",
        "MCP_OAUTHD_COOKIE_SECRET": "a-cookie-secret-of-at-least-32-characters",
        "MCP_OAUTHD_ISSUER": url,
        "MCP_OAUTHD_RESOURCE": url + "/mcp",
        "MCP_OAUTHD_REDIS_URL": REDIS,
    }

    nginx_text = (DEPLOY / "compose" / "nginx.conf").read_text()
    nginx_text = swap(nginx_text, "server mcp-oauthd:8080;", f"server 127.0.0.1:{daemon_port};")
    nginx_text = swap(nginx_text, "server mcp-server:8000;", f"server 127.0.0.1:{mcp_port};")
    nginx_text = swap(nginx_text, "listen 8080;", f"listen 127.0.0.1:{port};")
    writable = "".join(
        f"    {kind}_temp_path {tmp_path / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    nginx_text = swap(
        nginx_text,
        "    access_log /dev/stdout;\n",
        f"{writable}    access_log {tmp_path}/access.log;\n",
    )
    nginx_conf = tmp_path / "nginx.conf"
    nginx_conf.write_text(nginx_text)

    example = load_python_example()
    # The compose service runs server.py with MCP_AUTH=nginx and MCP_RESOURCE.
    mcp_app = example.build_app(example.Settings(resource=url + "/mcp", issuer=url, mode="nginx"))
    app = create_app(load_config(config_path, environ=environ))
    try:
        async with (
            running(app, daemon_port),
            serve_starlette(mcp_app, mcp_port),
            running_nginx(nginx_conf, port),
        ):
            yield ComposeStack(url, config_path, environ)
    finally:
        await delete_prefix(REDIS, prefix)


async def test_the_compose_stack_registers_logs_in_and_calls_a_tool_through_nginx(
    stack: ComposeStack, http: aiohttp.ClientSession
) -> None:
    tokens = MemoryTokenStorage()  # no client yet: the SDK registers itself (RFC 7591)
    user = BrowserUser(http, "demo", "demo", REDIRECT)
    provider = OAuthClientProvider(
        server_url=stack.url + "/mcp",
        client_metadata=client_metadata(REDIRECT),
        storage=tokens,
        redirect_handler=user.open,
        callback_handler=user.callback,
    )
    async with httpx2.AsyncClient(auth=provider, timeout=30) as client:
        identity = await call_whoami(stack.url + "/mcp", client)
    assert identity["subject"] == "local:demo"
    assert identity["email"] == "demo@example.com"
    assert tokens.client_info is not None  # registered dynamically
    assert provider.context.auth_server_url == stack.url

    # /metrics and /auth/verify are not published through nginx.
    for path in ("/metrics", "/auth/verify"):
        async with http.get(stack.url + path) as resp:
            assert resp.status == 404, path

    # Incident response on the same config: find the demo user's grant and revoke it.
    async def cli(*argv: str) -> int:
        return await asyncio.to_thread(main, [*argv, "--config", str(stack.config_path)])

    with pytest.MonkeyPatch.context() as patch:
        for name, value in stack.environ.items():
            patch.setenv(name, value)
        patch.setattr("mcp_oauthd.cli._configure_admin_logging", lambda config: None)
        assert await cli("grants", "revoke", "--user", "demo@example.com", "-o", "json") == 0
    assert tokens.tokens is not None
    async with http.post(
        stack.url + "/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
        headers={
            "Authorization": f"Bearer {tokens.tokens.access_token}",
            "Accept": "application/json, text/event-stream",
        },
    ) as resp:
        assert resp.status == 401
        assert "invalid_token" in resp.headers["WWW-Authenticate"]

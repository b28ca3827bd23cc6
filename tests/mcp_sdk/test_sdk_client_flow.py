"""The official MCP Python SDK client, unmodified, against an MCP server protected by
mcp-oauthd: discovery (RFC 9728 -> RFC 8414), PKCE, `resource`, a tool call, a refresh."""

from __future__ import annotations

from typing import Any

import aiohttp
import httpx2
from mcp import ClientSession
from mcp.client.auth.oauth2 import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull

from mcp_oauthd.app import create_app
from mcp_oauthd.clock import SystemClock
from mcp_oauthd.security.audit import Auditor
from mcp_oauthd.storage.memory import MemoryStorage
from mcp_oauthd.testing.daemon import running
from tests.conftest import DEMO_PASSWORD, base_config, free_port
from tests.mcp_sdk.support import (
    BrowserUser,
    MemoryTokenStorage,
    StorageVerifier,
    client_metadata,
    make_mcp_server,
    serve_starlette,
)

REDIRECT = "http://127.0.0.1:5599/callback"


async def test_the_sdk_client_logs_in_calls_a_tool_and_refreshes(
    http: aiohttp.ClientSession,
) -> None:
    daemon_port, mcp_port = free_port(), free_port()
    resource = f"http://127.0.0.1:{mcp_port}/mcp"
    config = base_config(
        daemon_port,
        resources=[
            {
                "uri": resource,
                "name": "Files",
                "scopes": ["files:read", "files:write"],
                "default_scopes": ["files:read"],
            }
        ],
    )
    storage = MemoryStorage()
    auditor = Auditor()
    clock = SystemClock()
    app = create_app(config, storage=storage, clock=clock, auditor=auditor)
    verifier = StorageVerifier(storage, resource, clock.now)
    mcp_app = make_mcp_server(config.issuer, resource, verifier).streamable_http_app()

    token_store = MemoryTokenStorage(
        client_info=OAuthClientInformationFull(
            client_id="cli",
            redirect_uris=[REDIRECT],  # type: ignore[list-item]
            token_endpoint_auth_method="none",
            grant_types=["authorization_code", "refresh_token"],
        )
    )
    user = BrowserUser(http, "alice", DEMO_PASSWORD, "http://127.0.0.1:5599")
    provider = OAuthClientProvider(
        server_url=resource,
        client_metadata=client_metadata(REDIRECT, scope="files:read"),
        storage=token_store,
        redirect_handler=user.open,
        callback_handler=user.callback,
    )
    async with running(app, daemon_port), serve_starlette(mcp_app, mcp_port):
        async with httpx2.AsyncClient(auth=provider, timeout=30) as client:
            async with streamable_http_client(resource, http_client=client) as streams:
                read, write = streams[0], streams[1]
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    result: Any = await session.call_tool("echo", {"text": "hi"})
                    assert "echo: hi" in str(result.content)
                    first = token_store.tokens
                    assert first is not None and first.refresh_token

                    # Make the SDK think its access token expired: it must refresh.
                    provider.context.token_expiry_time = 1.0  # long past (0 means "no expiry")
                    result = await session.call_tool("echo", {"text": "again"})
                    assert "echo: again" in str(result.content)

    # The authorization request carried PKCE S256 and the RFC 8707 resource.
    assert "code_challenge_method=S256" in user.authorization_urls[0]
    assert "resource=" in user.authorization_urls[0]
    second = token_store.tokens
    assert second is not None
    assert second.access_token != first.access_token
    assert second.refresh_token != first.refresh_token
    assert [e["event"] for e in auditor.events].count("token.refreshed") == 1
    assert verifier.seen[-1] == second.access_token

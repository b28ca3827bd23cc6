"""The official MCP Python SDK client, unmodified, against an MCP server protected by
mcp-oauthd: discovery (RFC 9728 -> RFC 8414), PKCE, `resource`, a tool call, a refresh."""

from __future__ import annotations

import aiohttp
from mcp.shared.auth import OAuthClientInformationFull

from tests.conftest import free_port
from tests.mcp_sdk.support import run_sdk_client

REDIRECT = "http://127.0.0.1:5599/callback"


async def test_a_preregistered_sdk_client_logs_in_calls_a_tool_and_refreshes(
    http: aiohttp.ClientSession,
) -> None:
    run = await run_sdk_client(
        http,
        daemon_port=free_port(),
        client_info=OAuthClientInformationFull(
            client_id="cli",
            redirect_uris=[REDIRECT],  # type: ignore[list-item]
            token_endpoint_auth_method="none",
            grant_types=["authorization_code", "refresh_token"],
        ),
    )
    assert "echo: hi" in run.tool_results[0]
    assert "echo: again" in run.tool_results[1]
    # The authorization request carried PKCE S256 and the RFC 8707 resource.
    assert "code_challenge_method=S256" in run.authorization_urls[0]
    assert "resource=" in run.authorization_urls[0]
    first, second = run.tokens
    assert second.access_token != first.access_token
    assert second.refresh_token != first.refresh_token


async def test_the_sdk_client_registers_itself_dynamically(http: aiohttp.ClientSession) -> None:
    """RFC 7591 as the SDK does it: no client info stored, so it registers first."""
    run = await run_sdk_client(http, daemon_port=free_port())
    assert run.client_info is not None
    assert run.client_info.client_id not in ("cli", "webapp", "ide")
    assert "echo: again" in run.tool_results[1]
    assert len(run.tokens) == 2

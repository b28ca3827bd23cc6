from __future__ import annotations

from tests.flows.conftest import Daemon

from mcp_oauthd.testing.browser import query_of


async def test_a_user_logs_in_consents_and_the_client_gets_tokens(daemon: Daemon) -> None:
    body = await daemon.tokens()
    assert body["access_token"].startswith("mcpat_")
    assert body["refresh_token"].startswith("mcprt_")
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "files:read"
    assert body["expires_in"] == 3600

"""The official MCP SDK client with a Client ID Metadata Document URL as its client_id."""

from __future__ import annotations

import aiohttp

from tests.clients.conftest import DocumentServer, Pki, cimd_config
from tests.conftest import free_port
from tests.mcp_sdk.support import run_sdk_client


async def test_the_sdk_client_uses_a_metadata_document_url_as_client_id(
    http: aiohttp.ClientSession, documents: DocumentServer, pki: Pki
) -> None:
    url = documents.url("good.json")
    run = await run_sdk_client(
        http,
        daemon_port=free_port(),
        overrides={"cimd": cimd_config(pki), "registration": {"policy": "closed"}},
        client_metadata_url=url,
    )
    assert documents.hits["good.json"] >= 1
    assert run.client_info is not None
    assert run.client_info.client_id == url
    assert "client_id=https" in run.authorization_urls[0]
    assert "echo: again" in run.tool_results[1]

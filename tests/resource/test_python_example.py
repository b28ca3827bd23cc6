"""examples/python-mcp-server in introspection mode: the official SDK client logs in against
it directly, and the server refuses other resources' tokens and missing scopes itself."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx2
import pytest

from mcp_oauthd.app import create_app
from mcp_oauthd.clock import SystemClock
from mcp_oauthd.storage.memory import MemoryStorage
from mcp_oauthd.testing import flow
from mcp_oauthd.testing.daemon import running
from tests.conftest import DEMO_PASSWORD, base_config, free_port
from tests.mcp_sdk.support import serve_starlette
from tests.resource.conftest import MAIL, SECRETS, clients, local_provider
from tests.resource.examples import (
    assert_foreign_token_refused,
    assert_missing_scope_refused,
    call_whoami,
    load_python_example,
    sdk_login_and_whoami,
)

pytestmark = pytest.mark.asyncio

REDIRECT = "http://127.0.0.1:5597/callback"


@dataclass
class Setup:
    issuer: str
    resource: str


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    daemon_port, mcp_port = free_port(), free_port()
    resource = f"http://127.0.0.1:{mcp_port}/mcp"
    config = base_config(
        daemon_port,
        provider=local_provider(),
        clients=clients(),
        resources=[
            {
                "uri": resource,
                "scopes": ["files:read", "files:write"],
                "default_scopes": ["files:read"],
                "default": True,
                "introspection_client_id": "files-rs",
                "introspection_client_secret": SECRETS["files-rs"],
            },
            {"uri": MAIL, "scopes": ["mail"]},
        ],
    )
    app = create_app(config, storage=MemoryStorage(), clock=SystemClock())
    example = load_python_example()
    settings = example.Settings(
        resource=resource,
        issuer=config.issuer,
        introspection_url=config.issuer + "/oauth/introspect",
        client_id="files-rs",
        client_secret=SECRETS["files-rs"],
        required_scopes=["files:read"],
    )
    async with running(app, daemon_port), serve_starlette(example.build_app(settings), mcp_port):
        yield Setup(config.issuer, resource)


async def test_the_sdk_client_logs_in_and_calls_a_tool(
    setup: Setup, http: aiohttp.ClientSession
) -> None:
    identity, provider = await sdk_login_and_whoami(http, setup.resource, REDIRECT)
    assert (identity["subject"], identity["email"]) == ("local:alice", "alice@example.com")
    assert provider.context.auth_server_url == setup.issuer


async def test_a_token_for_another_resource_is_refused_with_401(
    setup: Setup, http: aiohttp.ClientSession
) -> None:
    await assert_foreign_token_refused(http, setup.issuer, setup.resource, MAIL, {}, {})


async def test_a_token_without_the_required_scope_is_refused_with_403(
    setup: Setup, http: aiohttp.ClientSession
) -> None:
    await assert_missing_scope_refused(http, setup.issuer, setup.resource)


async def test_forged_identity_headers_are_replaced_by_the_introspected_ones(
    setup: Setup, http: aiohttp.ClientSession
) -> None:
    tokens = await flow.tokens(http, setup.issuer, username="mallory", password=DEMO_PASSWORD)
    forged: dict[str, Any] = {
        "Authorization": f"Bearer {tokens['access_token']}",
        "X-Auth-Subject": "local:alice",
    }
    async with httpx2.AsyncClient(headers=forged, timeout=30) as client:
        identity = await call_whoami(setup.resource, client)
    assert identity["subject"] == "local:mallory"

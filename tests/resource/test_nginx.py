"""Real nginx (deploy/nginx/nginx.conf) in front of an MCP server with no auth code at all:
the official MCP SDK client discovers everything through nginx, logs in, calls a tool;
tokens for other resources, missing scopes and forged identity headers are refused."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx2
import pytest
from mcp.client.auth.oauth2 import OAuthClientProvider
from mcp.shared.auth import OAuthClientInformationFull

from mcp_oauthd.app import create_app
from mcp_oauthd.clock import SystemClock
from mcp_oauthd.security.audit import Auditor
from mcp_oauthd.storage.memory import MemoryStorage
from mcp_oauthd.testing import flow
from mcp_oauthd.testing.daemon import running
from tests.conftest import DEMO_PASSWORD, base_config, free_port
from tests.mcp_sdk.support import BrowserUser, MemoryTokenStorage, client_metadata, serve_starlette
from tests.resource.conftest import MAIL, clients, local_provider
from tests.resource.examples import (
    call_whoami,
    load_python_example,
    nginx_binary,
    nginx_config,
    running_nginx,
)

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.skipif(
        nginx_binary() is None,
        reason="nginx is not installed (scripts/test installs the Debian package `nginx`)",
    ),
]

REDIRECT = "http://127.0.0.1:5598/callback"


@dataclass
class Recorder:
    """Wraps the MCP server's ASGI app and keeps the headers of every request it got."""

    app: Any
    seen: list[dict[str, str]] = field(default_factory=list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.seen.append({k.decode().lower(): v.decode() for k, v in scope["headers"]})
        await self.app(scope, receive, send)


@dataclass
class Stack:
    issuer: str  # the auth server, through nginx
    resource: str  # the MCP server, through nginx
    mcp: Recorder
    auditor: Auditor
    tmp: Path


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    port, daemon_port, mcp_port = free_port(), free_port(), free_port()
    issuer = f"http://localhost:{port}"
    resource = f"http://127.0.0.1:{port}/mcp"
    config = base_config(
        daemon_port,
        issuer=issuer,
        provider=local_provider(),
        clients=clients(),
        proxy={"trusted_cidrs": ["127.0.0.1/32"]},
        resources=[
            {
                "uri": resource,
                "name": "Files",
                "scopes": ["files:read", "files:write"],
                "default_scopes": ["files:read"],
                "default": True,
                "path_scopes": {"/mcp/admin": ["files:write"]},
            },
            {"uri": MAIL, "scopes": ["mail"]},
        ],
    )
    auditor = Auditor()
    app = create_app(config, storage=MemoryStorage(), clock=SystemClock(), auditor=auditor)
    example = load_python_example()
    mcp = Recorder(example.build_app(example.Settings(resource=resource, mode="nginx")))
    conf = nginx_config(tmp_path, port=port, daemon_port=daemon_port, mcp_port=mcp_port)
    async with (
        running(app, daemon_port),
        serve_starlette(mcp, mcp_port),
        running_nginx(conf, port),
    ):
        yield Stack(issuer, resource, mcp, auditor, tmp_path)


def challenge(value: str) -> dict[str, str]:
    assert value.startswith("Bearer "), value
    return dict(re.findall(r'(\w+)="([^"]*)"', value))


async def test_the_sdk_client_discovers_logs_in_and_calls_a_tool_through_nginx(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    token_store = MemoryTokenStorage(
        client_info=OAuthClientInformationFull(
            client_id="cli",
            redirect_uris=[REDIRECT],  # type: ignore[list-item]
            token_endpoint_auth_method="none",
            grant_types=["authorization_code", "refresh_token"],
        )
    )
    user = BrowserUser(http, "alice", DEMO_PASSWORD, REDIRECT)
    provider = OAuthClientProvider(
        server_url=stack.resource,
        client_metadata=client_metadata(REDIRECT),
        storage=token_store,
        redirect_handler=user.open,
        callback_handler=user.callback,
    )
    async with httpx2.AsyncClient(auth=provider, timeout=30) as client:
        identity = await call_whoami(stack.resource, client)
    assert identity["subject"] == "local:alice"
    assert identity["email"] == "alice@example.com"
    assert identity["scopes"] == "files:read"  # the scope nginx's 401 challenge advertised
    # Discovery went through nginx: the 401 pointed at the PRM on the MCP server's host,
    # which nginx answered from mcp-oauthd, naming the issuer behind nginx.
    meta = provider.context.protected_resource_metadata
    assert meta is not None and str(meta.resource) == stack.resource
    assert provider.context.auth_server_url == stack.issuer
    assert "resource=" in user.authorization_urls[0]
    # The MCP server saw the identity, never the token.
    calls = [h for h in stack.mcp.seen if "x-auth-subject" in h]
    assert calls and all("authorization" not in h for h in stack.mcp.seen)
    assert {h["x-auth-client-id"] for h in calls} == {"cli"}


async def test_a_token_for_another_resource_gets_401_through_nginx(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    mail = await flow.tokens(
        http, stack.issuer, username="alice", password=DEMO_PASSWORD, resource=MAIL, scope="mail"
    )
    headers = {
        "Authorization": f"Bearer {mail['access_token']}",
        "Accept": "application/json, text/event-stream",
    }
    async with http.post(stack.resource, json={"jsonrpc": "2.0"}, headers=headers) as resp:
        assert resp.status == 401
        found = challenge(resp.headers["WWW-Authenticate"])
    assert found == {
        "resource_metadata": stack.resource.replace(
            "/mcp", "/.well-known/oauth-protected-resource/mcp"
        ),
        "scope": "files:read",
        "error": "invalid_token",
        "error_description": found["error_description"],
    }
    assert stack.mcp.seen == []  # nothing reached the MCP server


async def test_without_a_token_nginx_answers_the_discovery_challenge(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    async with http.post(stack.resource, json={"jsonrpc": "2.0"}) as resp:
        assert resp.status == 401
        found = challenge(resp.headers["WWW-Authenticate"])
    assert "error" not in found
    async with http.get(found["resource_metadata"]) as resp:
        assert resp.status == 200
        meta = await resp.json()
    assert meta["resource"] == stack.resource
    assert meta["authorization_servers"] == [stack.issuer]


async def test_a_missing_scope_is_403_with_the_challenge_through_nginx(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    files = await flow.tokens(http, stack.issuer, username="alice", password=DEMO_PASSWORD)
    headers = {"Authorization": f"Bearer {files['access_token']}"}
    async with http.post(stack.resource + "/admin", json={}, headers=headers) as resp:
        assert resp.status == 403
        found = challenge(resp.headers["WWW-Authenticate"])
    assert found["error"] == "insufficient_scope"
    assert found["scope"] == "files:read files:write"


async def test_forged_identity_headers_never_reach_the_mcp_server(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    tokens = await flow.tokens(http, stack.issuer, username="mallory", password=DEMO_PASSWORD)
    forged = {
        "Authorization": f"Bearer {tokens['access_token']}",
        "X-Auth-Subject": "local:alice",
        "X-Auth-Email": "alice@example.com",
        "X-Auth-Scopes": "files:read files:write",
    }
    async with httpx2.AsyncClient(headers=forged, timeout=30) as client:
        identity = await call_whoami(stack.resource, client)
    assert identity["subject"] == "local:mallory"
    assert identity["email"] == "mallory@evil.example"
    assert identity["scopes"] == "files:read"


async def test_the_verify_endpoint_is_not_reachable_from_outside(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    for url in (
        stack.issuer + "/auth/verify",
        stack.resource.replace("/mcp", "/_mcp_oauthd_verify"),
    ):
        async with http.get(url) as resp:
            assert resp.status == 404, url

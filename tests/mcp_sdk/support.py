"""An MCP server (official SDK) protected by mcp-oauthd, and the SDK's OAuth client wired
to a scripted browser: the same pieces a real deployment has, in one process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import uvicorn
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver.server import MCPServer
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)

from mcp_oauthd.storage.base import Storage
from mcp_oauthd.testing import flow
from mcp_oauthd.testing.browser import ScriptedBrowser, query_of

Verify = Callable[[str], Awaitable[AccessToken | None]]


class StorageVerifier:
    """A token verifier that asks the daemon's storage (a stand-in for introspection,
    sharing the daemon's process): active, unexpired, and bound to this resource."""

    def __init__(self, storage: Storage, resource: str, now: Callable[[], float]) -> None:
        self.storage, self.resource, self.now = storage, resource, now
        self.seen: list[str] = []

    async def verify_token(self, token: str) -> AccessToken | None:
        from mcp_oauthd.oauth.tokens import token_hash

        self.seen.append(token)
        record = await self.storage.get_access_token(token_hash(token))
        if record is None or record.expires_at <= self.now() or record.resource != self.resource:
            return None
        return AccessToken(
            token=token,
            client_id=record.client_id,
            scopes=list(record.scopes),
            expires_at=int(record.expires_at),
            resource=record.resource,
            subject=record.subject,
        )


def make_mcp_server(issuer: str, resource: str, verifier: Any) -> MCPServer[Any]:
    server: MCPServer[Any] = MCPServer(
        "files",
        token_verifier=verifier,
        auth=AuthSettings(
            issuer_url=issuer,
            resource_server_url=resource,
            required_scopes=["files:read"],
            validate_token_resource=True,
        ),
    )

    @server.tool()
    def echo(text: str) -> str:
        """Echo the text back."""
        return f"echo: {text}"

    return server


@contextlib.asynccontextmanager
async def serve_starlette(app: Any, port: int) -> AsyncIterator[None]:
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)  # waiting for a socket to bind, not for time to pass
    try:
        yield
    finally:
        server.should_exit = True
        await task


@dataclass
class MemoryTokenStorage:
    client_info: OAuthClientInformationFull | None = None
    tokens: OAuthToken | None = None
    history: list[OAuthToken] = field(default_factory=list)

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens
        self.history.append(tokens)

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


class BrowserUser:
    """Plays the person: opens the authorization URL, consents, logs in, and hands the
    client's redirect parameters to the SDK's callback handler."""

    def __init__(
        self, session: aiohttp.ClientSession, username: str, password: str, redirect_prefix: str
    ) -> None:
        self.browser = ScriptedBrowser(session)
        self.username, self.password = username, password
        self.redirect_prefix = redirect_prefix
        self.result: AuthorizationCodeResult | None = None
        self.authorization_urls: list[str] = []

    async def open(self, url: str) -> None:
        self.authorization_urls.append(url)
        hop = await flow.walk(
            self.browser,
            url,
            username=self.username,
            password=self.password,
            redirect_prefix=self.redirect_prefix,
        )
        assert hop.location and hop.location.startswith(self.redirect_prefix), hop
        query = query_of(hop.location)
        self.result = AuthorizationCodeResult(
            code=query["code"], state=query.get("state"), iss=query.get("iss")
        )

    async def callback(self) -> AuthorizationCodeResult:
        assert self.result is not None
        result, self.result = self.result, None
        return result


def client_metadata(redirect_uri: str, scope: str | None = None) -> OAuthClientMetadata:
    return OAuthClientMetadata(
        client_name="SDK test client",
        redirect_uris=[redirect_uri],  # type: ignore[list-item]
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
        token_endpoint_auth_method="none",
        scope=scope,
    )


@dataclass
class SdkRun:
    tokens: list[OAuthToken]
    authorization_urls: list[str]
    client_info: OAuthClientInformationFull | None
    tool_results: list[str]


async def run_sdk_client(
    http: aiohttp.ClientSession,
    *,
    daemon_port: int,
    overrides: dict[str, Any] | None = None,
    client_info: OAuthClientInformationFull | None = None,
    client_metadata_url: str | None = None,
    redirect_uri: str = "http://127.0.0.1:5599/callback",
    refresh: bool = True,
) -> SdkRun:
    """Run the unmodified SDK client against an SDK MCP server protected by a daemon built
    from ``base_config(daemon_port, **overrides)``: log in, call a tool, optionally force a
    refresh and call again."""
    import httpx2
    from mcp import ClientSession
    from mcp.client.auth.oauth2 import OAuthClientProvider
    from mcp.client.streamable_http import streamable_http_client

    from mcp_oauthd.app import create_app
    from mcp_oauthd.clock import SystemClock
    from mcp_oauthd.storage.memory import MemoryStorage
    from mcp_oauthd.testing.daemon import running
    from tests.conftest import DEMO_PASSWORD, base_config, free_port

    mcp_port = free_port()
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
        **(overrides or {}),
    )
    storage = MemoryStorage()
    clock = SystemClock()
    app = create_app(config, storage=storage, clock=clock)
    verifier = StorageVerifier(storage, resource, clock.now)
    mcp_app = make_mcp_server(config.issuer, resource, verifier).streamable_http_app()
    token_store = MemoryTokenStorage(client_info=client_info)
    prefix = redirect_uri.rsplit("/", 1)[0]
    user = BrowserUser(http, "alice", DEMO_PASSWORD, prefix)
    provider = OAuthClientProvider(
        server_url=resource,
        client_metadata=client_metadata(redirect_uri, scope="files:read"),
        storage=token_store,
        redirect_handler=user.open,
        callback_handler=user.callback,
        client_metadata_url=client_metadata_url,
    )
    results: list[str] = []
    async with running(app, daemon_port), serve_starlette(mcp_app, mcp_port):
        async with httpx2.AsyncClient(auth=provider, timeout=30) as client:
            async with streamable_http_client(resource, http_client=client) as streams:
                async with ClientSession(streams[0], streams[1]) as session:
                    await session.initialize()
                    result: Any = await session.call_tool("echo", {"text": "hi"})
                    results.append(str(result.content))
                    if refresh:
                        # 0 would mean "no expiry" to the SDK: use a time long past.
                        provider.context.token_expiry_time = 1.0
                        result = await session.call_tool("echo", {"text": "again"})
                        results.append(str(result.content))
    assert verifier.seen, "the MCP server never saw a bearer token"
    return SdkRun(token_store.history, user.authorization_urls, token_store.client_info, results)

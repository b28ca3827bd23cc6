"""mcp-oauthd against a real OpenID Connect provider nobody here wrote: panva's certified
``oidc-provider`` (Node.js), on loopback. Its own discovery, JWKS, login and consent pages,
token endpoint (PKCE required, client_secret_basic), userinfo, refresh and revocation: the
login flow, the unmodified MCP SDK client, and upstream liveness (DESIGN §1)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx2
from aiohttp import web
from mcp import ClientSession
from mcp.client.auth.oauth2 import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull
from yarl import URL

from mcp_oauthd.app import create_app
from mcp_oauthd.clock import FakeClock, SystemClock
from mcp_oauthd.http.keys import SERVICES
from mcp_oauthd.oauth.pkce import new_pair
from mcp_oauthd.oauth.tokens import token_hash
from mcp_oauthd.providers._http import basic_auth_header
from mcp_oauthd.providers.base import UpstreamTokens
from mcp_oauthd.security.audit import Auditor
from mcp_oauthd.storage.base import GrantRecord
from mcp_oauthd.storage.memory import MemoryStorage
from mcp_oauthd.testing.browser import ScriptedBrowser, query_of
from mcp_oauthd.testing.daemon import running
from tests.conftest import free_port
from tests.daemon import Daemon
from tests.interop.conftest import StartProvider
from tests.interop.node_idp import NodeOidcProvider
from tests.interop.upstream import (
    UPSTREAM_EMAIL,
    UPSTREAM_LOGIN,
    UpstreamBrowserUser,
    interop_config,
    log_in,
)
from tests.mcp_sdk.support import (
    MemoryTokenStorage,
    StorageVerifier,
    client_metadata,
    make_mcp_server,
    serve_starlette,
)

CLIENT_REDIRECT = "http://127.0.0.1:5555/callback"


def callback_of(port: int) -> str:
    return f"http://127.0.0.1:{port}/oauth/callback"


@contextlib.asynccontextmanager
async def interop_daemon(
    port: int, idp: NodeOidcProvider, http: aiohttp.ClientSession, **overrides: Any
) -> AsyncIterator[tuple[Daemon, web.Application]]:
    """mcp-oauthd on ``port`` with the node provider upstream. The fake clock starts at
    the real time: the IdP signs ID tokens with its own (real) clock, and we verify
    ``exp``/``iat`` against ours. It moves only when a test advances it."""
    config = interop_config(port, idp, **overrides)
    storage, clock, auditor = MemoryStorage(), FakeClock(start=time.time()), Auditor()
    app = create_app(config, storage=storage, clock=clock, auditor=auditor)
    async with running(app, port) as url:
        yield Daemon(url, config, storage, clock, auditor, http), app


async def code_grant(
    daemon: Daemon, prompts: list[str] | None = None
) -> tuple[dict[str, Any], ScriptedBrowser]:
    """Log in through the real IdP and redeem the code; return the token answer."""
    verifier, challenge = new_pair()
    browser = daemon.browser()
    url = await daemon.authorize_url(code_challenge=challenge)
    hop = await log_in(browser, url, CLIENT_REDIRECT, prompts=prompts)
    assert hop.location is not None and hop.location.startswith(CLIENT_REDIRECT), hop
    query = query_of(hop.location)
    assert query["state"] == "client-state-123"
    assert query["iss"] == daemon.config.issuer  # RFC 9207
    status, body, _ = await daemon.token(
        {
            "grant_type": "authorization_code",
            "code": query["code"],
            "code_verifier": verifier,
            "client_id": "cli",
            "redirect_uri": CLIENT_REDIRECT,
        }
    )
    assert status == 200, body
    return dict(body), browser


async def grant_of(daemon: Daemon, access_token: str) -> GrantRecord:
    record = await daemon.storage.get_access_token(token_hash(access_token))
    assert record is not None
    grant = await daemon.storage.get_grant(record.grant_id)
    assert grant is not None
    return grant


def upstream_of(app: web.Application, grant: GrantRecord) -> UpstreamTokens:
    assert grant.upstream is not None
    plain = app[SERVICES].keyring.decrypt(grant.upstream, b"upstream")
    return UpstreamTokens.model_validate_json(plain)


async def refresh(daemon: Daemon, refresh_token: str) -> tuple[int, Any]:
    status, body, _ = await daemon.token(
        {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": "cli"}
    )
    return status, body


async def test_a_login_at_a_real_oidc_provider_gives_the_client_our_own_tokens(
    port: int, http: aiohttp.ClientSession, start_node_provider: StartProvider
) -> None:
    idp = await start_node_provider([callback_of(port)])
    prompts: list[str] = []
    async with interop_daemon(port, idp, http) as (daemon, app):
        body, browser = await code_grant(daemon, prompts)

        assert body["access_token"].startswith("mcpat_")
        assert body["refresh_token"].startswith("mcprt_")
        record = await daemon.storage.get_access_token(token_hash(body["access_token"]))
        assert record is not None
        assert record.subject == f"oidc:{UPSTREAM_LOGIN}"
        assert record.email == UPSTREAM_EMAIL
        # The IdP granted offline access: the upstream refresh token is kept, sealed.
        grant = await grant_of(daemon, body["access_token"])
        upstream_refresh = upstream_of(app, grant).refresh_token
        assert upstream_refresh and grant.upstream and upstream_refresh not in grant.upstream

    # The person really went through the IdP's own pages, and the IdP saw our own state,
    # nonce and PKCE, never the MCP client's resource.
    assert prompts == ["login", "consent"]
    upstream_hops = [h.url for h in browser.history if h.url.startswith(idp.issuer)]
    authorize = URL(next(u for u in upstream_hops if URL(u).path == "/auth")).query
    assert authorize["code_challenge_method"] == "S256"
    assert authorize["nonce"] and authorize["state"] != "client-state-123"
    assert "resource" not in authorize
    assert authorize["redirect_uri"] == callback_of(port)
    await idp.wait_for_event("grant.success", grant_type="authorization_code")


async def test_the_sdk_client_logs_in_at_a_real_oidc_provider_calls_a_tool_and_refreshes(
    http: aiohttp.ClientSession, start_node_provider: StartProvider
) -> None:
    daemon_port, mcp_port = free_port(), free_port()
    redirect = "http://127.0.0.1:5599/callback"
    resource = f"http://127.0.0.1:{mcp_port}/mcp"
    idp = await start_node_provider([callback_of(daemon_port)])
    config = interop_config(
        daemon_port,
        idp,
        resources=[
            {
                "uri": resource,
                "name": "Files",
                "scopes": ["files:read", "files:write"],
                "default_scopes": ["files:read"],
            }
        ],
    )
    storage, clock, auditor = MemoryStorage(), SystemClock(), Auditor()
    app = create_app(config, storage=storage, clock=clock, auditor=auditor)
    verifier = StorageVerifier(storage, resource, clock.now)
    mcp_app = make_mcp_server(config.issuer, resource, verifier).streamable_http_app()
    token_store = MemoryTokenStorage(
        client_info=OAuthClientInformationFull(
            client_id="cli",
            redirect_uris=[redirect],
            token_endpoint_auth_method="none",
            grant_types=["authorization_code", "refresh_token"],
        )
    )
    user = UpstreamBrowserUser(http, "http://127.0.0.1:5599")
    provider = OAuthClientProvider(
        server_url=resource,
        client_metadata=client_metadata(redirect, scope="files:read"),
        storage=token_store,
        redirect_handler=user.open,
        callback_handler=user.callback,
    )
    async with running(app, daemon_port), serve_starlette(mcp_app, mcp_port):
        async with httpx2.AsyncClient(auth=provider, timeout=30) as client:
            async with streamable_http_client(resource, http_client=client) as streams:
                async with ClientSession(streams[0], streams[1]) as session:
                    await session.initialize()
                    result: Any = await session.call_tool("echo", {"text": "hi"})
                    assert "echo: hi" in str(result.content)
                    first = token_store.tokens
                    assert first is not None and first.refresh_token

                    # Make the SDK think its access token expired: it must refresh.
                    provider.context.token_expiry_time = 1.0  # long past (0 means "no expiry")
                    result = await session.call_tool("echo", {"text": "again"})
                    assert "echo: again" in str(result.content)

    second = token_store.tokens
    assert second is not None
    assert second.access_token != first.access_token
    assert second.refresh_token != first.refresh_token
    assert verifier.seen[-1] == second.access_token
    assert [e["event"] for e in auditor.events].count("token.refreshed") == 1
    record = await storage.get_access_token(token_hash(second.access_token))
    assert record is not None and record.subject == f"oidc:{UPSTREAM_LOGIN}"
    assert "resource=" in user.authorization_urls[0]
    # The node IdP's access token lives 60 s, under the default 300 s refresh threshold:
    # the client's refresh made mcp-oauthd refresh upstream first.
    await idp.wait_for_event("grant.success", grant_type="refresh_token")


async def test_a_grant_revoked_at_the_real_oidc_provider_ends_the_clients_refreshes(
    port: int, http: aiohttp.ClientSession, start_node_provider: StartProvider
) -> None:
    idp = await start_node_provider([callback_of(port)], access_token_ttl=60)
    # Refresh upstream whenever its token has under an hour left: always, at a 60 s TTL.
    tokens = {"token_refresh_threshold": 3600}
    async with interop_daemon(port, idp, http, tokens=tokens) as (daemon, app):
        body, _ = await code_grant(daemon)
        grant = await grant_of(daemon, body["access_token"])
        before, expires_before = upstream_of(app, grant), grant.upstream_expires_at
        assert expires_before is not None

        # A client refresh renews upstream at the IdP first (DESIGN §1, upstream liveness).
        daemon.clock.advance(10)
        status, renewed = await refresh(daemon, body["refresh_token"])
        assert status == 200, renewed
        await idp.wait_for_event("grant.success", grant_type="refresh_token")
        grant = await grant_of(daemon, renewed["access_token"])
        after = upstream_of(app, grant)
        assert grant.upstream_expires_at is not None
        assert grant.upstream_expires_at > expires_before
        assert after.access_token != before.access_token
        assert after.refresh_token  # kept (or rotated) by the IdP, never lost

        # The person's upstream grant is revoked at the IdP (RFC 7009, as its own client).
        discovery = await idp_json(http, idp.issuer + "/.well-known/openid-configuration")
        async with http.post(
            discovery["revocation_endpoint"],
            data={"token": after.refresh_token, "token_type_hint": "refresh_token"},
            # form-urlencoded before Basic (RFC 6749 §2.3.1): the secret has symbols
            headers={"Authorization": basic_auth_header(idp.client_id, idp.client_secret)},
        ) as resp:
            assert resp.status == 200, await resp.text()
        await idp.wait_for_event("grant.revoked")

        # The next client refresh asks the IdP, learns the grant is dead, and ends ours.
        daemon.clock.advance(10)
        status, answer = await refresh(daemon, renewed["refresh_token"])
        assert status == 400, answer
        assert answer["error"] == "invalid_grant"
        await idp.wait_for_event("grant.error", grant_type="refresh_token")
        revoked = await daemon.storage.get_grant(grant.grant_id)
        assert revoked is not None and revoked.revoked_at is not None
        assert await daemon.storage.get_access_token(token_hash(renewed["access_token"])) is None
        assert [e["reason"] for e in daemon.events("grant.revoked")] == ["upstream_invalid_grant"]


async def idp_json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as resp:
        assert resp.status == 200
        return await resp.json()

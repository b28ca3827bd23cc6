"""MCP security best practices: token passthrough. The daemon issues its own tokens: an
upstream (IdP) token is never accepted as a bearer or a grant here, and none of our
tokens or codes is ever sent to the IdP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from mcp_oauthd.testing.fake_idp import FakeOidcProvider
from tests.daemon import Daemon
from tests.resource.conftest import ACCESS_TOKEN_TYPE, EXCHANGE_GRANT, SECRETS, oidc_provider
from tests.security.support import FILES, introspect, resources, verify


@pytest.fixture
async def idp() -> AsyncIterator[FakeOidcProvider]:
    async with FakeOidcProvider() as fake:
        yield fake


@pytest.fixture
async def daemon(daemon_factory: Any, idp: FakeOidcProvider) -> Daemon:
    result: Daemon = await daemon_factory(provider=oidc_provider(idp), resources=resources())
    idp.clock = result.clock
    return result


async def upstream_token(daemon: Daemon, ours: str) -> str:
    """The user's upstream access token, as the files MCP server legitimately gets it."""
    data = {
        "grant_type": EXCHANGE_GRANT,
        "subject_token": ours,
        "subject_token_type": ACCESS_TOKEN_TYPE,
    }
    auth = aiohttp.BasicAuth("files-rs", SECRETS["files-rs"])
    async with daemon.http.post(daemon.url + "/oauth/token", data=data, auth=auth) as resp:
        body: dict[str, Any] = await resp.json()
        assert resp.status == 200, body
        return str(body["access_token"])


async def test_an_upstream_access_token_is_never_accepted_as_a_bearer(daemon: Daemon) -> None:
    """Token passthrough: a token the IdP issued (to anyone) opens no MCP server here."""
    ours = (await daemon.tokens())["access_token"]
    theirs = await upstream_token(daemon, ours)
    assert theirs != ours
    assert await verify(daemon, ours, resource=FILES) == 200
    assert await verify(daemon, theirs, resource=FILES) == 401
    assert await introspect(daemon, theirs) == {"active": False}


async def test_an_upstream_token_is_not_a_grant_here_either(daemon: Daemon) -> None:
    """Neither as a refresh token nor as the subject of a token exchange."""
    tokens = await daemon.tokens()
    theirs = await upstream_token(daemon, tokens["access_token"])
    status, body, _ = await daemon.token(
        {"grant_type": "refresh_token", "refresh_token": theirs, "client_id": "cli"}
    )
    assert (status, body["error"]) == (400, "invalid_grant")
    data = {
        "grant_type": EXCHANGE_GRANT,
        "subject_token": theirs,
        "subject_token_type": ACCESS_TOKEN_TYPE,
    }
    auth = aiohttp.BasicAuth("files-rs", SECRETS["files-rs"])
    async with daemon.http.post(daemon.url + "/oauth/token", data=data, auth=auth) as resp:
        assert resp.status == 400


async def test_none_of_our_tokens_or_codes_is_ever_sent_to_the_idp(
    daemon: Daemon, idp: FakeOidcProvider
) -> None:
    """Token passthrough, the other way: the IdP sees our own state, PKCE and nonce, and
    its own tokens when we refresh upstream, never what we issue to clients."""
    idp.expires_in = 60  # the upstream token is near expiry at once: refreshes go upstream
    tokens = await daemon.tokens()
    daemon.clock.advance(120)
    status, refreshed, _ = await daemon.token(
        {
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": "cli",
        }
    )
    assert status == 200
    assert any(r.form.get("grant_type") == "refresh_token" for r in idp.requests_to("/token"))
    ours = [tokens["access_token"], tokens["refresh_token"], refreshed["access_token"]]
    for request in idp.requests:
        seen = repr((request.path, request.query, request.form, request.headers))
        for value in ours:
            assert value not in seen
        assert "mcpat_" not in seen and "mcprt_" not in seen and "mcpac_" not in seen

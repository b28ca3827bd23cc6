"""RFC 9700 §4.10: misuse of stolen access tokens. Sender-constrained tokens (mTLS, DPoP)
are not offered (see tests/security/__init__.py); what limits a stolen token here is its
audience (one MCP server, §4.9), its privileges (scopes, §4.10.2) and its lifetime, and
it dies with its grant."""

from __future__ import annotations

from typing import Any

import pytest

from tests.daemon import Daemon
from tests.resource.conftest import local_provider
from tests.security.support import FILES, MAIL, resources, verify


@pytest.fixture
async def daemon(daemon_factory: Any) -> Daemon:
    result: Daemon = await daemon_factory(provider=local_provider(), resources=resources())
    return result


async def test_a_stolen_token_works_only_at_its_own_mcp_server(daemon: Daemon) -> None:
    """RFC 9700 §4.10.1: audience restriction."""
    token = (await daemon.tokens())["access_token"]
    assert await verify(daemon, token, resource=FILES) == 200
    assert await verify(daemon, token, resource=MAIL) == 401


async def test_a_stolen_token_carries_only_the_scopes_the_user_granted(daemon: Daemon) -> None:
    """RFC 9700 §4.10.2: privilege restriction; the default grant is read-only."""
    token = (await daemon.tokens())["access_token"]
    assert await verify(daemon, token, resource=FILES, **{"X-Auth-Scope": "files:read"}) == 200
    assert await verify(daemon, token, resource=FILES, **{"X-Auth-Scope": "files:write"}) == 403


async def test_a_stolen_token_expires_with_the_access_token_lifetime(daemon: Daemon) -> None:
    """RFC 9700 §4.10: short-lived access tokens bound the damage."""
    token = (await daemon.tokens())["access_token"]
    daemon.clock.advance(daemon.config.tokens.access_token_ttl + 1)
    assert await verify(daemon, token, resource=FILES) == 401


async def test_a_stolen_token_dies_when_its_grant_is_revoked(daemon: Daemon) -> None:
    """RFC 9700 §4.10 / RFC 7009: revoking the refresh token ends every token of the grant."""
    tokens = await daemon.tokens()
    async with daemon.http.post(
        daemon.url + "/oauth/revoke",
        data={"token": tokens["refresh_token"], "client_id": "cli"},
    ) as resp:
        assert resp.status == 200
    assert await verify(daemon, tokens["access_token"], resource=FILES) == 401


async def test_a_stolen_refresh_token_is_not_a_bearer_token(daemon: Daemon) -> None:
    """RFC 9700 §4.10: the long-lived credential never opens a resource by itself."""
    tokens = await daemon.tokens()
    assert await verify(daemon, tokens["refresh_token"], resource=FILES) == 401

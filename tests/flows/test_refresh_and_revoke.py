"""Refresh rotation, reuse detection, grace window, revocation (RFC 7009)."""

from __future__ import annotations

import asyncio
from typing import Any

from mcp_oauthd.oauth.tokens import token_hash
from tests.flows.conftest import Daemon


async def refresh(daemon: Daemon, token: str, **extra: str) -> tuple[int, Any]:
    status, body, _ = await daemon.token(
        {"grant_type": "refresh_token", "refresh_token": token, "client_id": "cli", **extra}
    )
    return status, body


async def revoke(daemon: Daemon, token: str, client_id: str = "cli") -> int:
    async with daemon.http.post(
        daemon.url + "/oauth/revoke", data={"token": token, "client_id": client_id}
    ) as resp:
        return resp.status


async def test_a_refresh_rotates_the_refresh_token(daemon: Daemon) -> None:
    first = await daemon.tokens()
    status, second = await refresh(daemon, first["refresh_token"])
    assert status == 200
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    status, _third = await refresh(daemon, second["refresh_token"])
    assert status == 200


async def test_a_replay_inside_the_grace_window_gets_the_same_successor(daemon: Daemon) -> None:
    first = await daemon.tokens()
    _, second = await refresh(daemon, first["refresh_token"])
    daemon.clock.advance(5)
    status, again = await refresh(daemon, first["refresh_token"])
    assert status == 200
    assert again["refresh_token"] == second["refresh_token"]
    assert again["access_token"] == second["access_token"]


async def test_a_replay_after_the_grace_window_revokes_the_whole_family(daemon: Daemon) -> None:
    first = await daemon.tokens()
    _, second = await refresh(daemon, first["refresh_token"])
    daemon.clock.advance(31)
    status, body = await refresh(daemon, first["refresh_token"])
    assert (status, body["error"]) == (400, "invalid_grant")
    status, body = await refresh(daemon, second["refresh_token"])
    assert (status, body["error"]) == (400, "invalid_grant")
    assert await daemon.storage.get_access_token(token_hash(second["access_token"])) is None
    assert daemon.events("refresh.reused")


async def test_concurrent_refreshes_of_one_token_leave_one_chain(daemon: Daemon) -> None:
    first = await daemon.tokens()
    results = await asyncio.gather(*(refresh(daemon, first["refresh_token"]) for _ in range(10)))
    assert all(status == 200 for status, _ in results)
    assert len({body["refresh_token"] for _, body in results}) == 1
    grants = await daemon.storage.list_grants()
    assert len(grants) == 1


async def test_a_refresh_may_narrow_the_scope_but_never_widen_it(daemon: Daemon) -> None:
    first = await daemon.tokens(scope="files:read files:write")
    status, narrowed = await refresh(daemon, first["refresh_token"], scope="files:read")
    assert (status, narrowed["scope"]) == (200, "files:read")
    status, body = await refresh(daemon, narrowed["refresh_token"], scope="mail")
    assert (status, body["error"]) == (400, "invalid_scope")


async def test_a_refresh_token_is_bound_to_its_client(daemon: Daemon) -> None:
    first = await daemon.tokens()
    status, body, _ = await daemon.token(
        {
            "grant_type": "refresh_token",
            "refresh_token": first["refresh_token"],
            "client_id": "webapp",
            "client_secret": "s3cret-s3cret-s3cret",
        }
    )
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_an_access_token_is_not_accepted_as_a_refresh_token(daemon: Daemon) -> None:
    first = await daemon.tokens()
    status, body = await refresh(daemon, first["access_token"])
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_an_idle_refresh_token_expires(daemon: Daemon) -> None:
    first = await daemon.tokens()
    daemon.clock.advance(31 * 86400)
    status, body = await refresh(daemon, first["refresh_token"])
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_the_family_has_an_absolute_lifetime(daemon_factory: Any) -> None:
    daemon: Daemon = await daemon_factory(
        tokens={"refresh_token_ttl": "10d", "refresh_family_lifetime": "15d"}
    )
    token = (await daemon.tokens())["refresh_token"]
    daemon.clock.advance(8 * 86400)
    status, body = await refresh(daemon, token)
    assert status == 200
    daemon.clock.advance(8 * 86400)
    status, body = await refresh(daemon, body["refresh_token"])
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_revoking_a_refresh_token_ends_the_grant(daemon: Daemon) -> None:
    first = await daemon.tokens()
    assert await revoke(daemon, first["refresh_token"]) == 200
    assert await daemon.storage.get_access_token(token_hash(first["access_token"])) is None
    status, _ = await refresh(daemon, first["refresh_token"])
    assert status == 400
    assert daemon.events("token.revoked")


async def test_revoking_an_access_token_leaves_the_refresh_token(daemon: Daemon) -> None:
    first = await daemon.tokens()
    assert await revoke(daemon, first["access_token"]) == 200
    assert await daemon.storage.get_access_token(token_hash(first["access_token"])) is None
    status, _ = await refresh(daemon, first["refresh_token"])
    assert status == 200


async def test_revoking_an_unknown_token_is_a_success(daemon: Daemon) -> None:
    assert await revoke(daemon, "mcprt_nonexistent") == 200
    assert await revoke(daemon, "garbage") == 200


async def test_only_the_owning_client_may_revoke(daemon: Daemon) -> None:
    first = await daemon.tokens()
    async with daemon.http.post(
        daemon.url + "/oauth/revoke",
        data={
            "token": first["refresh_token"],
            "client_id": "webapp",
            "client_secret": "s3cret-s3cret-s3cret",
        },
    ) as resp:
        assert resp.status == 400
    status, _ = await refresh(daemon, first["refresh_token"])
    assert status == 200

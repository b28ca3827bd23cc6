"""The operator CLI against the Redis a running replica uses (own key prefix per test,
deleted afterwards). Needs Redis at 127.0.0.1:6379; skipped with a reason otherwise."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from mcp_oauthd.testing.redis_server import redis_answers
from tests.admin.conftest import LiveDaemon
from tests.storage.redis_support import delete_prefix, new_prefix

URL = "redis://127.0.0.1:6379/0"
DAY = 86400.0

pytestmark = pytest.mark.skipif(
    not redis_answers(), reason="no Redis answers at 127.0.0.1:6379 (start one to run these)"
)


@pytest.fixture
async def daemon(start_daemon: Any) -> AsyncIterator[LiveDaemon]:
    prefix = new_prefix()
    yield await start_daemon({"type": "redis", "url": URL, "key_prefix": prefix})
    await delete_prefix(URL, prefix)


async def test_an_operator_revokes_a_users_grants_in_redis_while_a_replica_serves(
    daemon: LiveDaemon, cli: Any
) -> None:
    alice = await daemon.tokens("alice")
    mallory = await daemon.tokens("mallory")
    listed = await cli(daemon, "grants", "list", "--user", "local:alice", "-o", "json")
    assert listed.code == 0, listed.err
    assert [g["email"] for g in listed.json] == ["Alice@Example.com"]
    revoked = await cli(daemon, "grants", "revoke", "--user", "local:alice", "-o", "json")
    assert len(revoked.json) == 1
    status, body = await daemon.refresh(alice["refresh_token"])
    assert (status, body["error"]) == (400, "invalid_grant")
    assert (await daemon.refresh(mallory["refresh_token"]))[0] == 200


async def test_clients_list_and_delete_work_on_redis(daemon: LiveDaemon, cli: Any) -> None:
    created = await daemon.register(client_name="MCP Inspector")
    listed = await cli(daemon, "clients", "list", "-o", "json")
    kinds = {c["client_id"]: c["kind"] for c in listed.json}
    assert kinds == {"cli": "static", "webapp": "static", created["client_id"]: "dynamic"}
    deleted = await cli(daemon, "clients", "delete", created["client_id"], "-o", "json")
    assert deleted.json["deleted"] is True
    after = await cli(daemon, "clients", "list", "-o", "json")
    assert created["client_id"] not in {c["client_id"] for c in after.json}


async def test_gc_on_redis_removes_grants_past_their_lifetime(daemon: LiveDaemon, cli: Any) -> None:
    await daemon.tokens("alice")
    assert len((await cli(daemon, "grants", "list", "-o", "json")).json) == 1
    later = await cli(daemon, "gc", "--now", str(daemon.clock.now() + 91 * DAY), "-o", "json")
    assert later.code == 0, later.err
    assert later.json["removed"] >= 1
    assert (await cli(daemon, "grants", "list", "-o", "json")).json == []

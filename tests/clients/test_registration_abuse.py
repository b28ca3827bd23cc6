"""Registration abuse controls: the per-address window, the cap on active clients, merged
identical registrations, expiry of clients never used, bounded memory."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mcp_oauthd.clock import FakeClock
from mcp_oauthd.service.registration import StorageRegistrationWindow, rate_key
from mcp_oauthd.storage.memory import MemoryStorage
from tests.clients.conftest import CLAUDE_CODE, WEB_APP, manage, register
from tests.daemon import Daemon

HOUR = 3600.0


def named(name: str) -> dict[str, Any]:
    return {**WEB_APP, "client_name": name}


async def limited(daemon_factory: Any, **registration: Any) -> Daemon:
    """A daemon whose only limits on /oauth/register are the registration ones."""
    daemon: Daemon = await daemon_factory(registration=registration, rate_limits={"enabled": False})
    return daemon


async def test_a_registration_flood_from_one_address_gets_cheap_429s(daemon_factory: Any) -> None:
    daemon = await limited(daemon_factory, max_per_window=5, max_clients_per_ip=100)
    replies = [await register(daemon, named(f"flood {i}")) for i in range(40)]
    assert [r.status for r in replies[:5]] == [201] * 5
    refused = replies[5:]
    assert {r.status for r in refused} == {429}
    for reply in refused:
        assert reply.body["error"] == "slow_down"
        assert 1 <= int(reply.headers["Retry-After"]) <= 3600
    # Refusals stored nothing: five clients, one window record, nothing else grows.
    storage = daemon.storage
    assert len(storage._clients) == 5
    assert len(storage._ephemeral) == 1
    assert len(daemon.events("rate_limited")) == 35
    assert {e["reason"] for e in daemon.events("rate_limited")} == {"window"}


async def test_retry_after_says_when_the_oldest_registration_leaves_the_window(
    daemon_factory: Any,
) -> None:
    daemon = await limited(daemon_factory, max_per_window=3, window="1h")
    for i in range(3):
        assert (await register(daemon, named(f"c{i}"))).status == 201
        daemon.clock.advance(100)
    reply = await register(daemon, named("c3"))
    assert reply.status == 429
    assert reply.headers["Retry-After"] == str(int(HOUR - 300))
    daemon.clock.advance(HOUR - 300)
    assert (await register(daemon, named("c3"))).status == 201


async def test_deleting_clients_does_not_give_registrations_back(daemon_factory: Any) -> None:
    daemon = await limited(daemon_factory, max_per_window=3)
    created = [(await register(daemon, named(f"c{i}"))).body for i in range(3)]
    for body in created:
        reply = await manage(
            daemon, "DELETE", body["registration_client_uri"], body["registration_access_token"]
        )
        assert reply.status == 204
    assert await daemon.storage.list_clients() == []
    assert (await register(daemon, named("again"))).status == 429
    daemon.clock.advance(HOUR)
    assert (await register(daemon, named("again"))).status == 201


async def test_active_clients_per_address_are_capped(daemon_factory: Any) -> None:
    daemon = await limited(daemon_factory, max_clients_per_ip=3, max_per_window=100)
    created = [(await register(daemon, named(f"c{i}"))).body for i in range(3)]
    reply = await register(daemon, named("c3"))
    assert reply.status == 429
    assert int(reply.headers["Retry-After"]) > 0
    assert daemon.events("rate_limited")[-1]["reason"] == "ip_cap"
    # The cap counts live clients: deleting one makes room.
    first = created[0]
    await manage(
        daemon, "DELETE", first["registration_client_uri"], first["registration_access_token"]
    )
    assert (await register(daemon, named("c3"))).status == 201


async def test_identical_public_registrations_from_one_address_share_one_client(
    daemon_factory: Any,
) -> None:
    daemon = await limited(daemon_factory, max_per_window=1, max_clients_per_ip=1)
    first = (await register(daemon, CLAUDE_CODE)).body
    for port in (50001, 50002, 50003):
        again = {**CLAUDE_CODE, "redirect_uris": [f"http://localhost:{port}/callback"]}
        reply = await register(daemon, again)
        assert reply.status == 201
        assert reply.body["client_id"] == first["client_id"]
        assert reply.body["redirect_uris"] == again["redirect_uris"]
        # Only the first registrant may manage (and so delete) the shared client.
        assert "registration_access_token" not in reply.body
    assert len(await daemon.storage.list_clients()) == 1
    assert [e.get("deduplicated") for e in daemon.events("registration")] == [
        None,
        True,
        True,
        True,
    ]
    # Different metadata is a different client, and counts.
    assert (await register(daemon, {**CLAUDE_CODE, "client_name": "Other"})).status == 429


async def test_a_deleted_client_is_not_handed_out_again(daemon_factory: Any) -> None:
    daemon = await limited(daemon_factory)
    first = (await register(daemon, CLAUDE_CODE)).body
    await manage(
        daemon, "DELETE", first["registration_client_uri"], first["registration_access_token"]
    )
    second = (await register(daemon, CLAUDE_CODE)).body
    assert second["client_id"] != first["client_id"]
    assert second["registration_access_token"]


async def test_a_client_never_used_expires(daemon_factory: Any) -> None:
    daemon = await limited(daemon_factory, unused_client_ttl="1h", max_clients_per_ip=1)
    created = (await register(daemon, CLAUDE_CODE)).body
    daemon.clock.advance(HOUR + 1)
    reply = await manage(
        daemon, "GET", created["registration_client_uri"], created["registration_access_token"]
    )
    assert reply.status == 401
    hop, _ = await daemon.login(
        client_id=created["client_id"], redirect_uri="http://localhost:50000/callback"
    )
    assert hop.status == 400
    assert "not registered" in hop.text
    # It no longer counts against the cap, and gc removes it.
    assert (await register(daemon, {**CLAUDE_CODE, "client_name": "New"})).status == 201
    await daemon.storage.gc(daemon.clock.now())
    assert await daemon.storage.get_client(created["client_id"]) is None


async def test_a_used_client_lives_until_it_is_idle_too_long(daemon_factory: Any) -> None:
    daemon = await limited(daemon_factory, unused_client_ttl="1h", idle_client_ttl="10d")
    created = (await register(daemon, CLAUDE_CODE)).body
    client_id = created["client_id"]
    redirect = "http://localhost:50000/callback"
    tokens = await daemon.tokens(client_id=client_id, redirect_uri=redirect)
    record = await daemon.storage.get_client(client_id)
    assert record is not None and record.expires_at == daemon.clock.now() + 10 * 86400
    daemon.clock.advance(5 * 86400)  # well past the unused lifetime
    status, body, _ = await daemon.token(
        {
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": client_id,
        }
    )
    assert status == 200, body
    daemon.clock.advance(10 * 86400 + 1)
    status, body, _ = await daemon.token(
        {
            "grant_type": "refresh_token",
            "refresh_token": body["refresh_token"],
            "client_id": client_id,
        }
    )
    assert status == 401
    assert body["error"] == "invalid_client"


# ----------------------------------------------------------------------------- the window
@pytest.mark.parametrize(
    ("ip", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("unknown", "unknown"),
    ],
)
def test_limits_count_an_ipv6_host_by_its_64_network(ip: str, key: str) -> None:
    assert rate_key(ip) == key


async def test_the_window_admits_exactly_its_limit_under_concurrency() -> None:
    storage = MemoryStorage()
    clock = FakeClock()
    window = StorageRegistrationWindow(storage, limit=5, window=HOUR)
    results = await asyncio.gather(*(window.acquire("k", clock.now()) for _ in range(50)))
    assert sum(r is None for r in results) == 5
    assert all(r == HOUR for r in results if r is not None)
    stored = await storage.get_ephemeral("regwindow", "k", clock.now())
    assert stored is not None and len(stored["t"]) == 5  # bounded by the limit


async def test_a_window_key_disappears_once_its_window_has_passed() -> None:
    storage = MemoryStorage()
    window = StorageRegistrationWindow(storage, limit=3, window=HOUR)
    for i in range(1000):
        assert await window.acquire(f"198.51.100.{i % 250}-{i}", 0.0) is None
    assert len(storage._ephemeral) == 1000
    await storage.gc(HOUR)
    assert len(storage._ephemeral) == 0


async def test_a_zero_limit_means_no_window() -> None:
    window = StorageRegistrationWindow(MemoryStorage(), limit=0, window=HOUR)
    assert all([await window.acquire("k", 0.0) is None for _ in range(10)])

"""MCP security best practices: SSRF through Client ID Metadata Documents. A client id
URL is fetched by the daemon, so an attacker names the cloud metadata service as their
"client". The guard itself is tested in tests/clients/test_ssrf_guard.py; here the attack
goes through the real HTTP surface and no connection to the address is ever attempted."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
import pytest

from mcp_oauthd.oauth.pkce import new_pair
from tests.daemon import Daemon

METADATA_IP = "169.254.169.254"
ATTACKER_HOST = "metadata.attacker.example"


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every outgoing connection the process attempts, by address."""
    attempts: list[Any] = []
    loop_type = type(asyncio.get_event_loop_policy().get_event_loop())
    original_sock_connect = loop_type.sock_connect
    original_create_connection = loop_type.create_connection

    async def sock_connect(self: Any, sock: socket.socket, address: Any) -> Any:
        attempts.append(address)
        return await original_sock_connect(self, sock, address)

    async def create_connection(self: Any, *args: Any, **kwargs: Any) -> Any:
        attempts.append((kwargs.get("host"), args[1:2]))
        return await original_create_connection(self, *args, **kwargs)

    monkeypatch.setattr(loop_type, "sock_connect", sock_connect)
    monkeypatch.setattr(loop_type, "create_connection", create_connection)

    async def resolve(self: Any, host: str, port: int = 0, family: Any = 0) -> list[Any]:
        # The attacker's DNS name points at the metadata service.
        assert host == ATTACKER_HOST, host
        attempts.append(("resolved", host))
        return [
            {
                "hostname": host,
                "host": METADATA_IP,
                "port": port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": 0,
            }
        ]

    monkeypatch.setattr(aiohttp.ThreadedResolver, "resolve", resolve)
    return attempts


def reached_metadata(attempts: list[Any]) -> bool:
    return any(METADATA_IP in repr(a) for a in attempts)


@pytest.mark.parametrize(
    "client_id",
    [
        f"https://{METADATA_IP}/latest/meta-data/iam/security-credentials/client.json",
        f"https://[::ffff:{METADATA_IP}]/latest/meta-data/client.json",
        f"https://{ATTACKER_HOST}/client.json",
    ],
)
async def test_a_client_id_pointing_at_the_metadata_service_is_refused_unfetched(
    daemon: Daemon, connections: list[Any], client_id: str
) -> None:
    """SSRF: the authorization request names the metadata service as the client id (by
    IP literal, IPv4-mapped IPv6, or a DNS name resolving to it)."""
    hop = await daemon.browser().get(
        await daemon.authorize_url(client_id=client_id, code_challenge=new_pair()[1])
    )
    assert (hop.status, hop.location) == (400, None)
    assert any("127.0.0.1" in repr(a) for a in connections)  # the recorder does record
    assert not reached_metadata(connections)
    refused = daemon.events("cimd.refused")
    assert refused and refused[-1]["client_id"] == client_id
    assert "private, local or reserved" in refused[-1]["reason"]
    if ATTACKER_HOST in client_id:
        assert ("resolved", ATTACKER_HOST) in connections  # refused on the resolved address


async def test_the_token_endpoint_does_not_fetch_it_either(
    daemon: Daemon, connections: list[Any]
) -> None:
    """SSRF through client authentication: a token request naming the URL as client_id."""
    client_id = f"https://{ATTACKER_HOST}/client.json"
    status, body, _ = await daemon.token(
        {"grant_type": "authorization_code", "code": "x", "client_id": client_id}
    )
    assert status in (400, 401)
    assert body["error"] in ("invalid_client", "invalid_request")
    assert not reached_metadata(connections)

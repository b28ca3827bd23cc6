"""The SSRF guard of the metadata document fetcher.

No test here sends a packet anywhere but loopback: forbidden addresses are refused before
any connection is attempted, and fake resolvers never answer with a public address that
the fetcher could then connect to.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from mcp_oauthd.clock import FakeClock
from mcp_oauthd.config.models import CimdConfig
from mcp_oauthd.oauth.redirects import RedirectPolicy
from mcp_oauthd.service.cimd import (
    AddressRefused,
    CimdError,
    CimdFetcher,
    GuardedResolver,
    check_literal_host,
    is_forbidden_address,
)

FORBIDDEN = [
    "127.0.0.1",
    "127.1.2.3",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "169.254.169.254",  # AWS, GCP, Azure, OpenStack metadata
    "100.64.0.1",  # CGNAT
    "100.100.100.200",  # Alibaba metadata
    "168.63.129.16",  # Azure wire server
    "192.0.0.192",  # Oracle metadata
    "0.0.0.0",
    "0.1.2.3",
    "224.0.0.1",
    "239.255.255.250",
    "255.255.255.255",
    "240.0.0.1",
    "198.18.0.1",
    "192.0.2.1",
    "::1",
    "::",
    "fe80::1",
    "fc00::1",
    "fd00:ec2::254",  # AWS metadata over IPv6
    "ff02::1",
    "fec0::1",
    "2001:db8::1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "::ffff:127.0.0.1",
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b:1::1",
    "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo, client 10.0.0.1
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "2a00:1450:4001::1"]


@pytest.mark.parametrize("address", FORBIDDEN)
def test_private_local_reserved_and_metadata_addresses_are_forbidden(address: str) -> None:
    assert is_forbidden_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    assert not is_forbidden_address(ipaddress.ip_address(address))


def test_the_test_switch_opens_loopback_and_nothing_else() -> None:
    for address in ("127.0.0.1", "::1", "127.0.0.53"):
        assert not is_forbidden_address(ipaddress.ip_address(address), allow_loopback=True)
    for address in ("10.0.0.1", "169.254.169.254", "::ffff:10.0.0.1", "fe80::1", "0.0.0.0"):
        assert is_forbidden_address(ipaddress.ip_address(address), allow_loopback=True)


def test_a_zone_scoped_address_is_forbidden() -> None:
    assert is_forbidden_address(ipaddress.ip_address("fe80::1%eth0"))


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "10.0.0.1", "169.254.169.254", "::1", "[::1]", "127.1", "2130706433"]
)
def test_ip_literal_hosts_are_checked_before_connecting(host: str) -> None:
    with pytest.raises(AddressRefused):
        check_literal_host(host)


def test_host_names_are_left_to_the_resolver_guard() -> None:
    check_literal_host("agent.example.com")  # no exception: checked at resolve time


class FakeResolver(AbstractResolver):
    """Answers from a script: one answer per call, in order."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.calls = 0

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": 0,
            }
            for address in addresses
        ]

    async def close(self) -> None:
        return None


async def test_the_resolver_guard_passes_public_answers() -> None:
    guard = GuardedResolver(FakeResolver(["93.184.216.34", "2606:4700:4700::1111"]))
    results = await guard.resolve("agent.example.com", 443)
    assert [r["host"] for r in results] == ["93.184.216.34", "2606:4700:4700::1111"]


@pytest.mark.parametrize("bad", ["10.0.0.1", "169.254.169.254", "::1", "::ffff:127.0.0.1"])
async def test_one_forbidden_address_in_an_answer_refuses_the_whole_answer(bad: str) -> None:
    guard = GuardedResolver(FakeResolver(["93.184.216.34", bad]))
    with pytest.raises(AddressRefused):
        await guard.resolve("agent.example.com", 443)


async def test_dns_rebinding_is_caught_on_the_next_resolution() -> None:
    # First answer public, second private: each connection resolves (and checks) afresh.
    guard = GuardedResolver(FakeResolver(["93.184.216.34"], ["169.254.169.254"]))
    await guard.resolve("rebind.example", 443)
    with pytest.raises(AddressRefused):
        await guard.resolve("rebind.example", 443)


async def test_an_empty_answer_is_an_error() -> None:
    with pytest.raises(OSError, match="did not resolve"):
        await GuardedResolver(FakeResolver([])).resolve("nothing.example", 443)


@pytest.fixture
async def guarded() -> AsyncIterator[CimdFetcher]:
    fetcher = CimdFetcher(
        CimdConfig(timeout=2),  # the test switch is off
        policy=RedirectPolicy(),
        known_scopes=[],
        clock=FakeClock(),
        resolver=FakeResolver(["10.0.0.7"], ["169.254.169.254"], ["::1"]),
    )
    yield fetcher
    await fetcher.close()


@pytest.mark.parametrize(
    "client_id",
    [
        "https://127.0.0.1/client.json",
        "https://10.0.0.1/client.json",
        "https://169.254.169.254/latest/meta-data/client.json",
        "https://[::1]/client.json",
        "https://[::ffff:a9fe:a9fe]/client.json",
        "https://100.100.100.200/client.json",
    ],
)
async def test_the_fetcher_refuses_forbidden_ip_literals(
    guarded: CimdFetcher, client_id: str
) -> None:
    with pytest.raises(CimdError, match="private, local or reserved"):
        await guarded.get(client_id)


async def test_the_fetcher_refuses_a_name_that_resolves_to_a_forbidden_address(
    guarded: CimdFetcher,
) -> None:
    for host in ("internal.example", "metadata.example", "loopback.example"):
        with pytest.raises(CimdError, match="private, local or reserved"):
            await guarded.get(f"https://{host}/client.json")


async def test_localhost_by_name_is_refused_when_the_test_switch_is_off() -> None:
    fetcher = CimdFetcher(
        CimdConfig(timeout=2), policy=RedirectPolicy(), known_scopes=[], clock=FakeClock()
    )
    try:
        with pytest.raises(CimdError, match="private, local or reserved"):
            await fetcher.get("https://localhost:9/client.json")
    finally:
        await fetcher.close()

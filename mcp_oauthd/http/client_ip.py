"""The client's IP address: the socket peer, unless it is a trusted proxy.

``X-Forwarded-For`` is believed only from configured proxies (DESIGN §7): with
``proxy.trusted_hops: N`` the address N entries from the right is the client (each proxy
appends the peer it saw); with ``proxy.trusted_cidrs`` the rightmost address that is not in
a trusted network is the client. Forwarded host or proto headers are never read: they
must not change the issuer or any redirect.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from aiohttp import web

from mcp_oauthd.config.models import ProxyConfig
from mcp_oauthd.http import keys

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=32)
def _networks(cidrs: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def _in(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return False
    return any(ip in net for net in networks)


def resolve(peer: str | None, forwarded_for: str | None, proxy: ProxyConfig) -> str:
    peer = peer or "unknown"
    if not forwarded_for or (proxy.trusted_hops == 0 and not proxy.trusted_cidrs):
        return peer
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    if proxy.trusted_cidrs:
        networks = _networks(tuple(proxy.trusted_cidrs))
        if not _in(peer, networks):
            return peer
        for hop in reversed(hops):
            if not _in(hop, networks):
                return hop
        return hops[0] if hops else peer
    # trusted_hops: the peer is the last proxy; each proxy before it appended one entry.
    chain = [*hops, peer]
    index = len(chain) - 1 - proxy.trusted_hops
    return chain[max(index, 0)]


def client_ip(request: web.Request) -> str:
    return resolve_client_ip(request, request.app[keys.SERVICES].config.proxy)


def resolve_client_ip(request: web.Request, proxy: ProxyConfig) -> str:
    """:func:`client_ip` with the proxy settings given (the hot lane's requests have no
    matched app to read them from)."""
    if proxy.trusted_hops == 0 and not proxy.trusted_cidrs:
        return request.remote or "unknown"  # no proxy trusted: the header is not read
    return resolve(request.remote, request.headers.get("X-Forwarded-For"), proxy)

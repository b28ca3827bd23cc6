"""RFC 9700 §4.13: TLS terminating reverse proxies. Headers a client can forge on the way
to the proxy (X-Forwarded-Host/Proto/Prefix/For, Forwarded, Host) never change the
issuer, an endpoint URL, a redirect, or who the daemon thinks the client is (unless that
proxy is configured as trusted, `proxy:`)."""

from __future__ import annotations

from typing import Any

from mcp_oauthd.testing.browser import form_fields, query_of
from tests.daemon import Daemon
from tests.security.support import walk_flow_recording

FORGED = {
    "X-Forwarded-Host": "evil.example",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Prefix": "/evil",
    "X-Forwarded-Port": "8443",
    "X-Original-Host": "evil.example",
    "Forwarded": "for=1.2.3.4;host=evil.example;proto=https",
    "X-Forwarded-For": "1.2.3.4",
}


async def test_forged_forwarding_headers_do_not_change_the_metadata(daemon: Daemon) -> None:
    """RFC 9700 §4.13: a forged host or scheme never reaches the issuer or endpoint URLs."""
    for path in (
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
        "/.well-known/oauth-protected-resource/mcp",
    ):
        async with daemon.http.get(
            daemon.url + path, headers={**FORGED, "Host": "evil.example"}
        ) as resp:
            body: dict[str, Any] = await resp.json()
        text = str(body)
        assert "evil" not in text, path
        assert daemon.config.issuer in text


async def test_forged_forwarding_headers_do_not_change_any_url_of_the_flow(
    daemon: Daemon,
) -> None:
    """RFC 9700 §4.13: form actions, redirects and the `iss` sent to the client come from
    the configured issuer only."""
    hops, _ = await walk_flow_recording(daemon, headers=FORGED)
    for hop in hops:
        assert "evil" not in (hop.location or "")
        if "<form" in hop.text:
            action, _ = form_fields(hop.text)
            assert action.startswith(daemon.config.issuer + "/")
    final = query_of(hops[-1].location or "")
    assert final["iss"] == daemon.config.issuer


async def test_a_forged_x_forwarded_for_does_not_escape_the_rate_limit(
    daemon_factory: Any,
) -> None:
    """RFC 9700 §4.13: without a trusted proxy, the socket peer is the client; rotating
    X-Forwarded-For values buys an attacker nothing."""
    daemon: Daemon = await daemon_factory(rate_limits={"token": {"per_minute": 1, "burst": 2}})
    statuses = []
    for i in range(4):
        async with daemon.http.post(
            daemon.url + "/oauth/token",
            data={"grant_type": "refresh_token"},
            headers={"X-Forwarded-For": f"203.0.113.{i}", "Forwarded": f"for=203.0.113.{i}"},
        ) as resp:
            statuses.append(resp.status)
    assert statuses == [401, 401, 429, 429]
    assert daemon.events("rate_limited")[0]["ip"] == "127.0.0.1"

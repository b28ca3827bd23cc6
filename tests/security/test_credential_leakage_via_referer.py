"""RFC 9700 §4.2: credential leakage via Referer headers. Every response of the flow says
`Referrer-Policy: no-referrer` and our pages load nothing from another origin; no token
ever travels in a URL (only the one-time code, in the redirect to the client); tokens and
codes in a query string are never accepted."""

from __future__ import annotations

from tests.daemon import Daemon
from tests.security.support import verify, walk_flow_recording


async def test_every_response_of_the_login_flow_sends_no_referrer(daemon: Daemon) -> None:
    """RFC 9700 §4.2.4: the pages holding a state in their URL, and the redirect carrying
    the code, pass nothing on in a Referer, and load nothing from another origin."""
    hops, _ = await walk_flow_recording(daemon)
    assert "code=" in (hops[-1].location or "")
    assert len(hops) >= 5  # authorize, consent, login page, login post, callback
    for hop in hops:
        assert hop.headers["Referrer-Policy"] == "no-referrer", hop.url
        csp = hop.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp
        assert "http" not in csp  # no third-party origin anywhere


async def test_no_access_or_refresh_token_ever_appears_in_a_url_of_the_flow(
    daemon: Daemon,
) -> None:
    """RFC 9700 §4.2 / §4.3.2: only the short-lived, single-use code goes in a URL."""
    hops, _ = await walk_flow_recording(daemon)
    for hop in hops:
        for url in (hop.url, hop.location or ""):
            assert "mcpat_" not in url and "mcprt_" not in url
            assert "access_token" not in url and "refresh_token" not in url


async def test_a_bearer_token_in_the_query_string_is_not_accepted(daemon: Daemon) -> None:
    """RFC 9700 §4.2 / RFC 6750 §2.3: tokens in URLs leak through logs and Referer; only
    the Authorization header is read."""
    token = (await daemon.tokens())["access_token"]
    assert await verify(daemon, token) == 200
    async with daemon.http.get(
        daemon.url + "/auth/verify?access_token=" + token,
        headers={"X-Auth-Resource": daemon.config.default_resource.uri},
    ) as resp:
        assert resp.status == 401


async def test_token_endpoint_credentials_in_the_query_string_are_ignored(daemon: Daemon) -> None:
    """RFC 9700 §4.2: a code or verifier put in the URL is never used (the body is read)."""
    code, verifier = await daemon.code()
    url = (
        f"{daemon.url}/oauth/token?grant_type=authorization_code&client_id=cli"
        f"&code={code}&code_verifier={verifier}"
    )
    async with daemon.http.post(url, data={"client_id": "cli"}) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"] == "invalid_request"  # no grant_type in the body
    # The code was not even looked at: it still redeems, from the body.
    form = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier}
    assert (await daemon.token({**form, "client_id": "cli"}))[0] == 200

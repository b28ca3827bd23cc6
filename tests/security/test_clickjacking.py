"""RFC 9700 §4.16: clickjacking. No page may be framed by another site: the consent
page's "Allow" button is exactly what an attacker would overlay. Every response carries
`frame-ancestors 'none'` and `X-Frame-Options: DENY` (for browsers without CSP 2)."""

from __future__ import annotations

from mcp_oauthd.http.responses import NO_STORE, SECURITY_HEADERS, json_response
from mcp_oauthd.oauth.pkce import new_pair
from tests.daemon import Daemon
from tests.security.support import walk_flow_recording


async def test_every_page_of_the_flow_forbids_framing(daemon: Daemon) -> None:
    """RFC 9700 §4.16: the consent and login pages cannot be framed."""
    hops, _ = await walk_flow_recording(daemon)
    pages = [hop for hop in hops if hop.status == 200]
    assert any('name="decision"' in hop.text for hop in pages)  # the consent page
    assert any('name="password"' in hop.text for hop in pages)  # the login page
    for hop in hops:
        assert "frame-ancestors 'none'" in hop.headers["Content-Security-Policy"], hop.url
        assert hop.headers["X-Frame-Options"] == "DENY"


async def test_error_and_hand_off_pages_forbid_framing_too(daemon: Daemon) -> None:
    """RFC 9700 §4.16: nor can the error and custom-scheme hand-off pages."""
    error = await daemon.http.get(daemon.url + "/oauth/authorize?client_id=nobody")
    handoff_url = await daemon.authorize_url(
        client_id="ide",
        redirect_uri="cursor://anysphere.cursor-retrieval/oauth/callback",
        code_challenge=new_pair()[1],
    )
    consent = await daemon.http.get(handoff_url)
    for resp in (error, consent):
        assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
        assert resp.headers["X-Frame-Options"] == "DENY"
        resp.close()


async def test_our_pages_run_no_script_at_all(daemon: Daemon) -> None:
    """A framed page could be scripted; ours allow no script (no inline, no source)."""
    hops, _ = await walk_flow_recording(daemon)
    for hop in hops:
        csp = hop.headers["Content-Security-Policy"]
        assert "script-src" not in csp and "default-src 'none'" in csp
        assert "<script" not in hop.text.lower()


def test_json_responses_never_share_their_header_set() -> None:
    """The prepared header set of the hot paths is handed to aiohttp as it is: each
    response must still get its own copy, or one request's headers would leak into
    every later answer."""
    first = json_response({"active": True}, headers=NO_STORE)
    first.headers["X-Request-ID"] = "first"
    second = json_response({"active": False}, headers=NO_STORE)
    assert "X-Request-ID" not in second.headers
    assert second.headers["Cache-Control"] == "no-store"
    for name, value in SECURITY_HEADERS:
        assert second.headers[name] == value

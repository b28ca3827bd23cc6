"""RFC 9700 §4 cases the authorization endpoint can show, refused as the RFC says."""

from __future__ import annotations

import pytest

from mcp_oauthd.oauth.pkce import new_pair
from mcp_oauthd.testing.browser import form_fields, query_of
from tests.flows.conftest import Daemon

REDIRECT_TRICKS = [
    "http://127.0.0.1:5555/callback/../evil",
    "http://127.0.0.1:5555/callback?x=1",
    "http://127.0.0.1.evil.com/callback",
    "http://evil@127.0.0.1:5555/callback",
    "http://localhost:5555/callback",
    "https://127.0.0.1:5555/callback",
    "http://127.0.0.1:5555/CALLBACK",
    "http://127.0.0.1:5555/callback#frag",
    "javascript:alert(1)",
    "http://127.0.0.1:5555/callback%2F..",
]


@pytest.mark.parametrize("redirect_uri", REDIRECT_TRICKS)
async def test_a_redirect_uri_trick_is_refused_with_a_page_not_a_redirect(
    daemon: Daemon, redirect_uri: str
) -> None:
    """RFC 9700 §4.1 (insufficient redirect URI validation) and §4.11 (open redirection)."""
    _, challenge = new_pair()
    hop = await daemon.browser().get(
        await daemon.authorize_url(redirect_uri=redirect_uri, code_challenge=challenge)
    )
    assert hop.status == 400
    assert hop.location is None
    assert "redirect" in hop.text.lower()


async def test_loopback_redirects_match_on_any_port(daemon: Daemon) -> None:
    """RFC 8252 §7.3."""
    body = await daemon.tokens(redirect_uri="http://127.0.0.1:61234/callback")
    assert body["access_token"]


async def test_an_unknown_client_gets_an_html_error_page(daemon: Daemon) -> None:
    _, challenge = new_pair()
    hop = await daemon.browser().get(
        await daemon.authorize_url(client_id="nobody", code_challenge=challenge)
    )
    assert hop.status == 400
    assert hop.location is None
    assert "not registered" in hop.text


async def test_a_missing_code_challenge_is_refused_at_the_client(daemon: Daemon) -> None:
    """PKCE is required (OAuth 2.1 §4.1.1)."""
    hop = await daemon.browser().get(await daemon.authorize_url())
    assert hop.status == 302
    assert hop.location
    query = query_of(hop.location)
    assert query["error"] == "invalid_request"
    assert query["iss"] == daemon.config.issuer


async def test_the_plain_pkce_method_is_refused(daemon: Daemon) -> None:
    """RFC 9700 §4.8 PKCE downgrade."""
    hop = await daemon.browser().get(
        await daemon.authorize_url(code_challenge="a" * 43, code_challenge_method="plain")
    )
    assert hop.location
    assert query_of(hop.location)["error"] == "invalid_request"


async def test_a_token_request_without_the_verifier_fails(daemon: Daemon) -> None:
    """RFC 9700 §4.8: a code bound to a challenge needs its verifier."""
    code, _ = await daemon.code()
    status, body, _ = await daemon.token(
        {"grant_type": "authorization_code", "code": code, "client_id": "cli"}
    )
    assert (status, body["error"]) == (400, "invalid_request")


async def test_a_wrong_verifier_fails_and_is_audited(daemon: Daemon) -> None:
    """RFC 9700 §4.5 authorization code injection."""
    code, _ = await daemon.code()
    other, _ = new_pair()
    status, body, _ = await daemon.token(
        {
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": other,
            "client_id": "cli",
        }
    )
    assert (status, body["error"]) == (400, "invalid_grant")
    assert daemon.events("pkce.failed")


async def test_another_clients_code_is_refused(daemon: Daemon) -> None:
    """RFC 9700 §4.5: a code is bound to the client it was issued to."""
    code, verifier = await daemon.code()
    status, body, _ = await daemon.token(
        {
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "client_id": "webapp",
            "client_secret": "s3cret-s3cret-s3cret",
        }
    )
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_a_different_redirect_uri_at_the_token_endpoint_is_refused(daemon: Daemon) -> None:
    code, verifier = await daemon.code()
    status, body, _ = await daemon.token(
        {
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "client_id": "cli",
            "redirect_uri": "http://127.0.0.1:5555/other",
        }
    )
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_a_consent_post_without_the_csrf_token_is_refused(daemon: Daemon) -> None:
    """CSRF on the consent page (RFC 9700 §4.7, MCP security best practices)."""
    _, challenge = new_pair()
    browser = daemon.browser()
    hop = await browser.get(await daemon.authorize_url(code_challenge=challenge))
    action, fields = form_fields(hop.text)
    fields["csrf_token"] = "forged"
    fields["decision"] = "approve"
    hop = await browser.post(action, fields)
    assert hop.status == 403
    assert hop.location is None


async def test_a_consent_from_another_browser_is_refused(daemon: Daemon) -> None:
    """Session fixation / login CSRF: the flow is bound to the browser that began it."""
    import aiohttp

    from mcp_oauthd.testing.browser import ScriptedBrowser

    _, challenge = new_pair()
    hop = await daemon.browser().get(await daemon.authorize_url(code_challenge=challenge))
    action, fields = form_fields(hop.text)
    fields["decision"] = "approve"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other:
        hop = await ScriptedBrowser(other).post(action, fields)
    assert hop.status in (400, 403)
    assert hop.location is None


async def test_a_duplicated_parameter_is_refused(daemon: Daemon) -> None:
    url = await daemon.authorize_url(code_challenge=new_pair()[1])
    hop = await daemon.browser().get(url + "&client_id=cli")
    assert hop.status == 400


async def test_an_unsupported_response_type_is_reported_to_the_client(daemon: Daemon) -> None:
    hop = await daemon.browser().get(
        await daemon.authorize_url(response_type="token", code_challenge=new_pair()[1])
    )
    assert hop.location
    assert query_of(hop.location)["error"] == "unsupported_response_type"


async def test_a_replayed_callback_state_shows_an_expired_page(daemon: Daemon) -> None:
    browser = daemon.browser()
    _, challenge = new_pair()
    hop = await browser.get(await daemon.authorize_url(code_challenge=challenge))
    action, fields = form_fields(hop.text)
    fields["decision"] = "approve"
    hop = await browser.follow(await browser.post(action, fields), "http://127.0.0.1:5555")
    action, fields = form_fields(hop.text)
    from mcp_oauthd.testing.browser import query_of as q

    fields.update(username="alice", password="correct horse battery staple")
    login = await browser.post(action, fields)
    assert login.location is not None
    callback_url = daemon.url + login.location if login.location.startswith("/") else login.location
    first = await browser.get(callback_url)
    assert first.status == 302
    assert "code" in q(first.location or "")
    # The upstream state was taken once; replaying the callback is refused.
    replay = await browser.get(callback_url)
    assert replay.status == 400
    assert replay.location is None
    assert "expired" in replay.text

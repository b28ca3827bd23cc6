"""MCP security best practices: session hijacking. Every step of a login is bound to the
browser that started it (a signed, HttpOnly cookie), so a flow, a consent form or an
upstream callback handed to another browser is refused; and no session is a credential:
a resource request needs its bearer token every time."""

from __future__ import annotations

import aiohttp

from mcp_oauthd.oauth.pkce import new_pair
from mcp_oauthd.testing.browser import ScriptedBrowser, form_fields
from tests.daemon import Daemon
from tests.security.support import FILES, submit_login, walk_to_login_form


async def test_a_consent_form_submitted_from_another_browser_is_refused(daemon: Daemon) -> None:
    """The attacker starts a flow and gets the victim to submit its consent form."""
    hop = await daemon.browser().get(await daemon.authorize_url(code_challenge=new_pair()[1]))
    action, fields = form_fields(hop.text)
    fields["decision"] = "approve"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other:
        hop = await ScriptedBrowser(other).post(action, fields)
    assert hop.status in (400, 403)
    assert hop.location is None


async def test_an_upstream_callback_opened_in_another_browser_is_refused(daemon: Daemon) -> None:
    """Session fixation / login CSRF: the attacker signs in, and sends the callback URL
    (with the upstream code) to the victim so the victim's client gets the attacker's
    account. The victim's browser did not start that flow: no code is minted."""
    attacker = daemon.browser()
    login, _ = await walk_to_login_form(daemon, attacker)
    to_callback = await submit_login(attacker, login)
    url = str(to_callback.location)
    url = daemon.url + url if url.startswith("/") else url
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as victim:
        hop = await ScriptedBrowser(victim).get(url)
    assert (hop.status, hop.location) == (403, None)
    assert daemon.events("callback.browser_mismatch")


async def test_a_callback_state_is_single_use(daemon: Daemon) -> None:
    """A replayed (or stolen) callback URL is refused even in the right browser."""
    browser = daemon.browser()
    login, _ = await walk_to_login_form(daemon, browser)
    to_callback = await submit_login(browser, login)
    url = str(to_callback.location)
    url = daemon.url + url if url.startswith("/") else url
    first = await browser.get(url)
    assert first.status == 302 and "code=" in (first.location or "")
    replay = await browser.get(url)
    assert (replay.status, replay.location) == (400, None)
    assert "expired" in replay.text


async def test_the_browser_binding_cookie_is_http_only_and_same_site(daemon: Daemon) -> None:
    """Session hijacking: scripts cannot read the binding cookie; other sites cannot use it."""
    async with daemon.http.get(
        await daemon.authorize_url(code_challenge=new_pair()[1]), allow_redirects=False
    ) as resp:
        cookies = resp.headers.getall("Set-Cookie")
    assert cookies
    for cookie in cookies:
        assert "HttpOnly" in cookie
        assert "SameSite=Lax" in cookie


async def test_a_session_id_or_cookie_is_never_a_credential_at_the_resource(
    daemon: Daemon,
) -> None:
    """MCP: servers must not use sessions for authentication. With the browser's cookies
    and an MCP session id but no bearer token, /auth/verify refuses."""
    await daemon.login()  # this session now holds our login cookies
    async with daemon.http.get(
        daemon.url + "/auth/verify",
        headers={"X-Auth-Resource": FILES, "Mcp-Session-Id": "a-hijacked-session"},
    ) as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer ")

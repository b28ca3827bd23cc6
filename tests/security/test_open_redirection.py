"""RFC 9700 §4.11: open redirection. The authorization server never redirects to a URI it
has not validated (§4.11.2), and our own client leg (the upstream callback, the login
form) redirects only to server-side, validated destinations (§4.11.1)."""

from __future__ import annotations

from mcp_oauthd.oauth.pkce import new_pair
from mcp_oauthd.testing.browser import form_fields
from tests.daemon import Daemon
from tests.security.support import DEFAULT_REDIRECT, submit_login, walk_to_login_form

EVIL = "https://evil.example/landing"


async def test_an_unknown_client_with_any_redirect_uri_gets_a_page(daemon: Daemon) -> None:
    """RFC 9700 §4.11.2: an invalid client_id never leads to a redirect."""
    hop = await daemon.browser().get(
        await daemon.authorize_url(
            client_id="nobody", redirect_uri=EVIL, code_challenge=new_pair()[1]
        )
    )
    assert (hop.status, hop.location) == (400, None)
    assert "not registered" in hop.text


async def test_an_erroneous_request_with_an_unregistered_uri_gets_a_page(daemon: Daemon) -> None:
    """RFC 9700 §4.11.2: errors are sent to the client only at a registered URI; an
    attacker cannot use a broken request to bounce the user to their site."""
    hop = await daemon.browser().get(
        await daemon.authorize_url(response_type="token", scope="nonsense", redirect_uri=EVIL)
    )
    assert (hop.status, hop.location) == (400, None)


async def test_the_callback_ignores_a_redirect_target_in_its_query(daemon: Daemon) -> None:
    """RFC 9700 §4.11.1: the destination comes from the server-side flow, never from the
    request; extra parameters cannot steer the code elsewhere."""
    browser = daemon.browser()
    login, _ = await walk_to_login_form(daemon, browser)
    to_callback = await submit_login(browser, login)
    assert to_callback.location is not None
    url = (
        daemon.url + to_callback.location
        if to_callback.location.startswith("/")
        else (to_callback.location)
    )
    hop = await browser.get(url + "&redirect_uri=" + EVIL + "&next=" + EVIL)
    assert hop.status == 302
    assert (hop.location or "").startswith(DEFAULT_REDIRECT)


async def test_the_login_form_always_returns_to_our_own_callback(daemon: Daemon) -> None:
    """RFC 9700 §4.11.1: a `next`/`redirect_uri` field added to the login form is ignored."""
    browser = daemon.browser()
    login, _ = await walk_to_login_form(daemon, browser)
    action, fields = form_fields(login.text)
    fields.update(
        username="alice",
        password="correct horse battery staple",
        next=EVIL,
        redirect_uri=EVIL,
        return_to=EVIL,
    )
    hop = await browser.post(action, fields)
    assert hop.status == 303
    assert (hop.location or "").startswith(daemon.config.issuer + "/oauth/callback?")


async def test_a_callback_with_an_unknown_state_redirects_nowhere(daemon: Daemon) -> None:
    """RFC 9700 §4.11.1: without a flow there is no destination; a page, not a redirect."""
    hop = await daemon.browser().get(
        daemon.url + "/oauth/callback?state=forged&code=x&redirect_uri=" + EVIL
    )
    assert (hop.status, hop.location) == (400, None)

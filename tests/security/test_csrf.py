"""RFC 9700 §4.7: cross-site request forgery. The client's `state` comes back untouched
for its own CSRF check, PKCE binds the code to the client's session, and our own forms
(consent, login) carry a token bound to the flow and the browser."""

from __future__ import annotations

from mcp_oauthd.oauth.pkce import new_pair
from mcp_oauthd.testing.browser import form_fields, query_of
from tests.daemon import Daemon
from tests.security.support import walk_to_login_form


async def test_the_clients_state_comes_back_unchanged(daemon: Daemon) -> None:
    """RFC 9700 §4.7.1: a client's CSRF defence is its state; it must round-trip exactly."""
    state = "csrf-9f86d081884c7d659a2feaa0c55ad015 ÿ/?&="
    hop, _ = await daemon.login(state=state)
    assert query_of(hop.location or "")["state"] == state


async def test_a_consent_post_without_the_csrf_token_is_refused(daemon: Daemon) -> None:
    """RFC 9700 §4.7 on our consent page: a forged approval (another site posting the
    form into the user's browser) lacks the token and is refused."""
    browser = daemon.browser()
    hop = await browser.get(await daemon.authorize_url(code_challenge=new_pair()[1]))
    action, fields = form_fields(hop.text)
    fields["csrf_token"] = "forged"
    fields["decision"] = "approve"
    hop = await browser.post(action, fields)
    assert hop.status == 403
    assert hop.location is None


async def test_a_csrf_token_from_another_flow_does_not_approve_this_one(daemon: Daemon) -> None:
    """RFC 9700 §4.7: the token is bound to its flow, not just to the browser."""
    browser = daemon.browser()
    first = await browser.get(await daemon.authorize_url(code_challenge=new_pair()[1]))
    second = await browser.get(await daemon.authorize_url(code_challenge=new_pair()[1]))
    action, fields = form_fields(second.text)
    fields["csrf_token"] = form_fields(first.text)[1]["csrf_token"]
    fields["decision"] = "approve"
    assert (await browser.post(action, fields)).status == 403


async def test_a_forged_login_post_is_refused(daemon: Daemon) -> None:
    """RFC 9700 §4.7 / login CSRF: a page that posts credentials to our login form (to log
    the victim in as the attacker) lacks the form's token."""
    browser = daemon.browser()
    login, _ = await walk_to_login_form(daemon, browser)
    action, fields = form_fields(login.text)
    fields.update(username="mallory", password="correct horse battery staple")
    fields["csrf_token"] = "forged"
    hop = await browser.post(action, fields)
    assert hop.status == 403
    assert hop.location is None

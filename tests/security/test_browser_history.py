"""RFC 9700 §4.3: insufficient protection of credentials in browser history. The only
credential in a URL is the code, and it is single use and short-lived; nothing that
carries a credential may be cached; the consent and login forms are POSTs."""

from __future__ import annotations

from mcp_oauthd.testing.browser import form_fields
from tests.daemon import Daemon
from tests.security.support import walk_flow_recording


async def test_a_code_from_the_history_is_useless_once_redeemed(daemon: Daemon) -> None:
    """RFC 9700 §4.3.1: someone reading the history later finds a spent code."""
    code, verifier = await daemon.code()
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": verifier,
        "client_id": "cli",
    }
    assert (await daemon.token(form))[0] == 200
    status, body, _ = await daemon.token(form)
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_a_code_from_the_history_expires_within_code_ttl(daemon: Daemon) -> None:
    """RFC 9700 §4.3.1: even unredeemed, a code in the history is dead within a minute."""
    code, verifier = await daemon.code()
    daemon.clock.advance(daemon.config.tokens.code_ttl + 1)
    status, body, _ = await daemon.token(
        {
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "client_id": "cli",
        }
    )
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_responses_carrying_a_code_or_tokens_are_never_cached(daemon: Daemon) -> None:
    """RFC 9700 §4.3 / RFC 6749 §5.1: no-store on the code redirect and on token responses."""
    hops, verifier = await walk_flow_recording(daemon)
    assert "no-store" in hops[-1].headers["Cache-Control"]
    code = hops[-1].location.split("code=")[1].split("&")[0]  # type: ignore[union-attr]
    status, _, headers = await daemon.token(
        {
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "client_id": "cli",
        }
    )
    assert status == 200
    assert headers["Cache-Control"] == "no-store"
    assert headers["Pragma"] == "no-cache"


async def test_the_consent_and_login_forms_are_posted_not_put_in_urls(daemon: Daemon) -> None:
    """RFC 9700 §4.3.2: the password and the consent decision never land in a URL."""
    hops, _ = await walk_flow_recording(daemon)
    posted = [h for h in hops if h.method == "POST"]
    assert len(posted) == 2  # consent, login
    page = next(h for h in hops if 'name="password"' in h.text)
    assert 'method="post"' in page.text.lower()
    action, fields = form_fields(page.text)
    assert "password" in fields and "?" not in action
    for hop in hops:
        assert "password" not in hop.url and "decision" not in hop.url

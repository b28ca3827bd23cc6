"""Walking one login flow across two replicas, as a round-robin load balancer would."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import aiohttp

from mcp_oauthd.oauth.pkce import new_pair
from mcp_oauthd.testing import flow
from mcp_oauthd.testing.browser import ScriptedBrowser, form_fields, query_of
from tests.conftest import DEMO_PASSWORD


def on(port: int, url: str) -> str:
    """The same URL, sent to another replica."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, f"127.0.0.1:{port}", parts.path, parts.query, ""))


async def tokens_across(
    http: aiohttp.ClientSession, issuer: str, port_a: int, port_b: int
) -> dict[str, str]:
    """authorize on A, consent on B, login page on A, login on B, callback on A, token on
    B; returns the token response."""
    browser = ScriptedBrowser(http)
    verifier, challenge = new_pair()
    consent = await browser.get(on(port_a, flow.authorize_url(issuer, code_challenge=challenge)))
    action, fields = form_fields(consent.text)
    fields["decision"] = "approve"
    to_login = await browser.post(on(port_b, action), fields)
    assert to_login.status == 303 and to_login.location
    login_page = await browser.get(on(port_a, to_login.location))
    action, fields = form_fields(login_page.text)
    fields.update(username="alice", password=DEMO_PASSWORD)
    to_callback = await browser.post(on(port_b, action), fields)
    assert to_callback.location
    to_client = await browser.get(on(port_a, to_callback.location))
    assert to_client.location
    status, tokens, _ = await flow.token_request(
        http,
        on(port_b, issuer),
        {
            "grant_type": "authorization_code",
            "code": query_of(to_client.location)["code"],
            "code_verifier": verifier,
            "client_id": "cli",
        },
    )
    assert status == 200, tokens
    return dict(tokens)

"""The person at the browser, when the upstream is a real IdP: our consent page, then the
IdP's own login and consent pages (oidc-provider's HTML forms, submitted as a browser
would: relative actions joined with the page's URL, every field it renders sent back)."""

from __future__ import annotations

from typing import Any

import aiohttp
from mcp.shared.auth import AuthorizationCodeResult
from yarl import URL

from mcp_oauthd.config.models import Config
from mcp_oauthd.testing.browser import Hop, ScriptedBrowser, form_fields, query_of
from tests.conftest import base_config
from tests.interop.node_idp import NodeOidcProvider
from tests.mcp_sdk.support import BrowserUser

# The one account the node provider's findAccount knows.
UPSTREAM_LOGIN = "alice"
UPSTREAM_EMAIL = "alice@example.com"


def interop_config(port: int, idp: NodeOidcProvider, **overrides: Any) -> Config:
    """``base_config`` with the node provider as the upstream, asking for offline access
    (oidc-provider issues a refresh token only for ``offline_access`` requested with
    ``prompt=consent``, OIDC Core §11)."""
    provider = {
        "type": "oidc",
        "issuer": idp.issuer,
        "client_id": idp.client_id,
        "client_secret": idp.client_secret,
        "allow_insecure_http": True,
        "scopes": ["openid", "email", "profile", "offline_access"],
        "extra_authorize_params": {"prompt": "consent"},
    }
    return base_config(port, provider=provider, **overrides)


async def submit_upstream_pages(
    browser: ScriptedBrowser,
    hop: Hop,
    stop_prefix: str,
    *,
    login: str = UPSTREAM_LOGIN,
    prompts: list[str] | None = None,
) -> Hop:
    """Follow redirects and submit the IdP's interaction pages (login, then consent) until
    a redirect points at ``stop_prefix``; return that hop (or the page we got stuck on).
    The prompts answered are appended to ``prompts``."""
    hop = await browser.follow(hop, stop_prefix)
    for _ in range(4):  # login, consent, and slack for a repeated prompt
        if hop.status != 200 or "<form" not in hop.text:
            return hop
        action, fields = form_fields(hop.text)
        prompt = fields.get("prompt")
        if prompt == "login":
            fields.update(login=login, password="any password: dev interactions ignore it")
        elif prompt != "consent":
            return hop
        if prompts is not None:
            prompts.append(prompt)
        target = str(URL(hop.url).join(URL(action)))
        hop = await browser.follow(await browser.post(target, fields), stop_prefix)
    return hop


async def log_in(
    browser: ScriptedBrowser,
    authorize_url: str,
    client_prefix: str,
    *,
    prompts: list[str] | None = None,
) -> Hop:
    """authorize -> our consent (approve) -> the IdP's pages -> our callback -> the hop that
    redirects to the client."""
    hop = await browser.get(authorize_url)
    if hop.status == 200 and 'name="flow"' in hop.text:
        action, fields = form_fields(hop.text)
        fields["decision"] = "approve"
        hop = await browser.post(str(URL(hop.url).join(URL(action))), fields)
    return await submit_upstream_pages(browser, hop, client_prefix, prompts=prompts)


class UpstreamBrowserUser(BrowserUser):
    """``BrowserUser`` for a real upstream IdP: the same hand-off to the SDK's callback
    handler, but the login happens on the IdP's pages, not on ours."""

    def __init__(self, session: aiohttp.ClientSession, redirect_prefix: str) -> None:
        super().__init__(session, UPSTREAM_LOGIN, "", redirect_prefix)

    async def open(self, url: str) -> None:
        self.authorization_urls.append(url)
        hop = await log_in(self.browser, url, self.redirect_prefix)
        assert hop.location and hop.location.startswith(self.redirect_prefix), hop
        query = query_of(hop.location)
        self.result = AuthorizationCodeResult(
            code=query["code"], state=query.get("state"), iss=query.get("iss")
        )

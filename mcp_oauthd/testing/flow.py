"""Walk the whole login flow against any running mcp-oauthd, as a person's browser would:
authorize -> consent -> (local) login -> callback -> client redirect; then the token call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from mcp_oauthd.oauth.pkce import new_pair
from mcp_oauthd.testing.browser import Hop, ScriptedBrowser, form_fields, query_of

DEFAULT_REDIRECT = "http://127.0.0.1:5555/callback"


@dataclass
class FlowResult:
    hop: Hop  # the last hop: normally the redirect to the client
    verifier: str
    browser: ScriptedBrowser

    @property
    def query(self) -> dict[str, str]:
        assert self.hop.location is not None, self.hop
        return query_of(self.hop.location)


def authorize_url(issuer: str, **params: str) -> str:
    base = {
        "response_type": "code",
        "client_id": "cli",
        "redirect_uri": DEFAULT_REDIRECT,
        "state": "client-state-123",
        "code_challenge_method": "S256",
    }
    base.update(params)
    return str(URL(issuer + "/oauth/authorize").with_query(base))


async def login(
    http: aiohttp.ClientSession,
    issuer: str,
    *,
    username: str,
    password: str,
    approve: bool = True,
    **params: str,
) -> FlowResult:
    verifier, challenge = new_pair()
    params.setdefault("code_challenge", challenge)
    browser = ScriptedBrowser(http)
    hop = await walk(
        browser,
        authorize_url(issuer, **params),
        username=username,
        password=password,
        redirect_prefix=params.get("redirect_uri", DEFAULT_REDIRECT),
        approve=approve,
    )
    return FlowResult(hop, verifier, browser)


async def walk(
    browser: ScriptedBrowser,
    url: str,
    *,
    username: str,
    password: str,
    redirect_prefix: str,
    approve: bool = True,
) -> Hop:
    """From an authorization URL through our consent and local login pages to the last hop
    (normally the redirect to ``redirect_prefix``)."""
    hop = await browser.get(url)
    if hop.status == 200 and 'name="flow"' in hop.text:
        action, fields = form_fields(hop.text)
        fields["decision"] = "approve" if approve else "deny"
        hop = await browser.post(action, fields)
    hop = await browser.follow(hop, redirect_prefix)
    if hop.status == 200 and 'name="password"' in hop.text:
        action, fields = form_fields(hop.text)
        fields.update(username=username, password=password)
        hop = await browser.follow(await browser.post(action, fields), redirect_prefix)
    return hop


async def token_request(
    http: aiohttp.ClientSession,
    issuer: str,
    data: dict[str, str],
    auth: aiohttp.BasicAuth | None = None,
) -> tuple[int, Any, Any]:
    async with http.post(issuer + "/oauth/token", data=data, auth=auth) as resp:
        return resp.status, await resp.json(), resp.headers


async def tokens(
    http: aiohttp.ClientSession, issuer: str, *, username: str, password: str, **params: str
) -> dict[str, Any]:
    """The whole flow, then the code exchange; returns the token response."""
    result = await login(http, issuer, username=username, password=password, approve=True, **params)
    query = result.query
    assert "code" in query, query
    status, body, _ = await token_request(
        http,
        issuer,
        {
            "grant_type": "authorization_code",
            "code": query["code"],
            "code_verifier": result.verifier,
            "client_id": params.get("client_id", "cli"),
            "redirect_uri": params.get("redirect_uri", DEFAULT_REDIRECT),
        },
    )
    assert status == 200, body
    return dict(body)

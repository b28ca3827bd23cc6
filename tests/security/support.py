"""Helpers the attack modules share: speaking as a resource server, walking a flow by hand."""

from __future__ import annotations

from typing import Any

import aiohttp

from mcp_oauthd.oauth.pkce import new_pair
from mcp_oauthd.testing.browser import Hop, ScriptedBrowser, form_fields
from mcp_oauthd.testing.flow import DEFAULT_REDIRECT
from tests.conftest import DEMO_PASSWORD
from tests.daemon import Daemon
from tests.resource.conftest import FILES, MAIL, SECRETS, resources

__all__ = [
    "DEFAULT_REDIRECT",
    "FILES",
    "MAIL",
    "SECRETS",
    "introspect",
    "resources",
    "verify",
    "walk_to_login_form",
]


async def verify(daemon: Daemon, token: str, resource: str = FILES, **headers: str) -> int:
    """The status nginx's ``auth_request`` would get for this bearer at ``resource``."""
    sent = {"Authorization": f"Bearer {token}", "X-Auth-Resource": resource, **headers}
    async with daemon.http.get(daemon.url + "/auth/verify", headers=sent) as resp:
        return resp.status


async def introspect(daemon: Daemon, token: str, rs: str = "files-rs") -> dict[str, Any]:
    auth = aiohttp.BasicAuth(rs, SECRETS[rs])
    async with daemon.http.post(
        daemon.url + "/oauth/introspect", data={"token": token}, auth=auth
    ) as resp:
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


async def walk_to_login_form(
    daemon: Daemon, browser: ScriptedBrowser, **params: str
) -> tuple[Hop, str]:
    """authorize -> consent (approve) -> the local login form; returns it and the verifier."""
    verifier, challenge = new_pair()
    params.setdefault("code_challenge", challenge)
    hop = await browser.get(await daemon.authorize_url(**params))
    action, fields = form_fields(hop.text)
    fields["decision"] = "approve"
    hop = await browser.follow(await browser.post(action, fields), DEFAULT_REDIRECT)
    assert 'name="password"' in hop.text, hop.text[:300]
    return hop, verifier


async def submit_login(browser: ScriptedBrowser, login_form: Hop) -> Hop:
    """Post the login form as alice; returns the 303 to our callback."""
    action, fields = form_fields(login_form.text)
    fields.update(username="alice", password=DEMO_PASSWORD)
    return await browser.post(action, fields)


class RecordedHop:
    def __init__(self, method: str, url: str, status: int, headers: Any, text: str) -> None:
        self.method = method
        self.url = url
        self.status = status
        self.headers = headers
        self.location: str | None = headers.get("Location")
        self.text = text


async def walk_flow_recording(
    daemon: Daemon, headers: dict[str, str] | None = None, **params: str
) -> tuple[list[RecordedHop], str]:
    """The whole browser leg (authorize, consent, login, callback) with every response's
    headers recorded (``headers`` are sent with every request); returns the hops (the last
    one redirects to the client) and the verifier."""
    from yarl import URL

    verifier, challenge = new_pair()
    params.setdefault("code_challenge", challenge)
    hops: list[RecordedHop] = []

    async def send(method: str, url: str, data: dict[str, str] | None = None) -> RecordedHop:
        async with daemon.http.request(
            method, url, data=data, headers=headers, allow_redirects=False
        ) as resp:
            hop = RecordedHop(method, url, resp.status, resp.headers, await resp.text())
        hops.append(hop)
        return hop

    hop = await send("GET", await daemon.authorize_url(**params))
    action, fields = form_fields(hop.text)
    fields["decision"] = "approve"
    hop = await send("POST", action, fields)
    while hop.location and not hop.location.startswith(DEFAULT_REDIRECT):
        hop = await send("GET", str(URL(hop.url).join(URL(hop.location))))
        if 'name="password"' in hop.text:
            action, fields = form_fields(hop.text)
            fields.update(username="alice", password=DEMO_PASSWORD)
            hop = await send("POST", action, fields)
    return hops, verifier

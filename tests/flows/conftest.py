from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from mcp_oauthd.app import create_app
from mcp_oauthd.clock import FakeClock
from mcp_oauthd.config.models import Config
from mcp_oauthd.oauth.pkce import new_pair
from mcp_oauthd.security.audit import Auditor
from mcp_oauthd.storage.memory import MemoryStorage
from mcp_oauthd.testing.browser import Hop, ScriptedBrowser, form_fields, query_of
from mcp_oauthd.testing.daemon import running
from tests.conftest import DEMO_PASSWORD, base_config


@dataclass
class Daemon:
    url: str
    config: Config
    storage: MemoryStorage
    clock: FakeClock
    auditor: Auditor
    http: aiohttp.ClientSession

    def browser(self) -> ScriptedBrowser:
        return ScriptedBrowser(self.http)

    def events(self, name: str) -> list[dict[str, object]]:
        return [e for e in self.auditor.events if e.get("event") == name]

    async def authorize_url(self, **params: str) -> str:
        base = {
            "response_type": "code",
            "client_id": "cli",
            "redirect_uri": "http://127.0.0.1:5555/callback",
            "state": "client-state-123",
            "code_challenge_method": "S256",
        }
        base.update(params)
        from yarl import URL

        return str(URL(self.url + "/oauth/authorize").with_query(base))

    async def login(
        self,
        *,
        username: str = "alice",
        password: str = DEMO_PASSWORD,
        approve: bool = True,
        **params: str,
    ) -> tuple[Hop, str]:
        """Walk authorize -> consent -> login -> callback; return the final hop and the
        PKCE verifier used."""
        verifier, challenge = new_pair()
        params.setdefault("code_challenge", challenge)
        browser = self.browser()
        hop = await browser.get(await self.authorize_url(**params))
        redirect_prefix = params.get("redirect_uri", "http://127.0.0.1:5555/callback")
        if hop.status == 200 and "csrf_token" in hop.text and 'name="flow"' in hop.text:
            action, fields = form_fields(hop.text)
            fields["decision"] = "approve" if approve else "deny"
            hop = await browser.post(action, fields)
        hop = await browser.follow(hop, redirect_prefix)
        if hop.status == 200 and 'name="password"' in hop.text:
            action, fields = form_fields(hop.text)
            fields.update(username=username, password=password)
            hop = await browser.post(action, fields)
            hop = await browser.follow(hop, redirect_prefix)
        return hop, verifier

    async def code(self, **params: str) -> tuple[str, str]:
        hop, verifier = await self.login(**params)
        assert hop.status in (302, 303), hop.text[:500]
        assert hop.location is not None
        query = query_of(hop.location)
        assert "code" in query, query
        return query["code"], verifier

    async def token(self, data: dict[str, str], auth: aiohttp.BasicAuth | None = None) -> Any:
        async with self.http.post(self.url + "/oauth/token", data=data, auth=auth) as resp:
            return resp.status, await resp.json(), resp.headers

    async def tokens(self, **params: str) -> dict[str, Any]:
        code, verifier = await self.code(**params)
        status, body, _ = await self.token(
            {
                "grant_type": "authorization_code",
                "code": code,
                "code_verifier": verifier,
                "client_id": params.get("client_id", "cli"),
                "redirect_uri": params.get("redirect_uri", "http://127.0.0.1:5555/callback"),
            }
        )
        assert status == 200, body
        return dict(body)


@pytest.fixture
async def daemon_factory(port: int, http: aiohttp.ClientSession) -> AsyncIterator[Any]:
    stack: list[Any] = []

    async def make(**overrides: Any) -> Daemon:
        config = base_config(port, **overrides)
        storage = MemoryStorage()
        clock = FakeClock()
        auditor = Auditor()
        app = create_app(config, storage=storage, clock=clock, auditor=auditor)
        ctx = running(app, port)
        url = await ctx.__aenter__()
        stack.append(ctx)
        return Daemon(url, config, storage, clock, auditor, http)

    yield make
    for ctx in reversed(stack):
        await ctx.__aexit__(None, None, None)


@pytest.fixture
async def daemon(daemon_factory: Any) -> Daemon:
    result: Daemon = await daemon_factory()
    return result

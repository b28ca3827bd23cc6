from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from mcp_oauthd.app import create_app
from mcp_oauthd.clock import FakeClock
from mcp_oauthd.config.models import Config
from mcp_oauthd.security.audit import Auditor
from mcp_oauthd.storage.memory import MemoryStorage
from mcp_oauthd.testing import flow
from mcp_oauthd.testing.browser import Hop, ScriptedBrowser, query_of
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
        return flow.authorize_url(self.url, **params)

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
        result = await flow.login(
            self.http, self.url, username=username, password=password, approve=approve, **params
        )
        return result.hop, result.verifier

    async def code(self, **params: str) -> tuple[str, str]:
        hop, verifier = await self.login(**params)
        assert hop.status in (302, 303), hop.text[:500]
        assert hop.location is not None
        query = query_of(hop.location)
        assert "code" in query, query
        return query["code"], verifier

    async def token(self, data: dict[str, str], auth: aiohttp.BasicAuth | None = None) -> Any:
        return await flow.token_request(self.http, self.url, data, auth)

    async def tokens(self, **params: str) -> dict[str, Any]:
        return await flow.tokens(
            self.http, self.url, username="alice", password=DEMO_PASSWORD, **params
        )


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

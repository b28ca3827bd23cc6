"""A daemon with two protected resources, each with its own resource-server credentials,
and helpers that speak as those resource servers (introspection, /auth/verify, exchange)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from argon2 import PasswordHasher

from mcp_oauthd.app import create_app
from mcp_oauthd.clock import FakeClock
from mcp_oauthd.http import keys
from mcp_oauthd.security.audit import Auditor
from mcp_oauthd.service.jwt import SigningKeyManager
from mcp_oauthd.storage.memory import MemoryStorage
from mcp_oauthd.testing.daemon import running
from mcp_oauthd.testing.fake_idp import FakeOidcProvider
from tests.conftest import DEMO_PASSWORD, base_config, free_port
from tests.daemon import Daemon

FILES = "http://127.0.0.1:9999/mcp"
MAIL = "https://mail.example.com/mcp"
SECRETS = {"files-rs": "files-rs-secret-0123456789abcdef", "mail-rs": "mail-rs-secret-0123456789"}
EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"


def resources() -> list[dict[str, Any]]:
    return [
        {
            "uri": FILES,
            "name": "Files",
            "scopes": ["files:read", "files:write"],
            "default_scopes": ["files:read"],
            "default": True,
            "introspection_client_id": "files-rs",
            "introspection_client_secret": SECRETS["files-rs"],
            "allow_upstream_token": True,
            "path_scopes": {"/mcp/admin": ["files:write"]},
        },
        {
            "uri": MAIL,
            "scopes": ["mail"],
            "introspection_client_id": "mail-rs",
            "introspection_client_secret": SECRETS["mail-rs"],
        },
    ]


# Cheap argon2 parameters: these tests are about tokens, not password hashing (the local
# provider takes its timing-equalising dummy hash's parameters from these too).
FAST_HASH = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(DEMO_PASSWORD)
# 32+ characters: hashed with SHA-256 rather than argon2 at start-up.
WEBAPP_SECRET = "webapp-secret-0123456789abcdef-0123"


def local_provider() -> dict[str, Any]:
    return {
        "type": "local",
        "users": [
            {"username": "alice", "password_hash": FAST_HASH, "email": "alice@example.com"},
            {"username": "mallory", "password_hash": FAST_HASH, "email": "mallory@evil.example"},
        ],
    }


def clients() -> list[dict[str, Any]]:
    return [
        {
            "client_id": "cli",
            "client_name": "Test CLI",
            "redirect_uris": ["http://127.0.0.1/callback"],
        },
        {
            "client_id": "webapp",
            "client_name": "Web App",
            "client_secret": WEBAPP_SECRET,
            "redirect_uris": ["https://app.example.com/cb"],
        },
    ]


def oidc_provider(idp: FakeOidcProvider) -> dict[str, Any]:
    return {
        "type": "oidc",
        "issuer": idp.issuer,
        "client_id": idp.client_id,
        "client_secret": idp.client_secret,
        "allow_insecure_http": True,
    }


@dataclass
class RsDaemon(Daemon):
    app: web.Application

    @property
    def signing_keys(self) -> SigningKeyManager:
        manager = self.app[keys.SERVICES].signing_keys
        assert manager is not None
        return manager

    async def introspect(
        self, token: str, rs: str | None = "files-rs", **extra: str
    ) -> tuple[int, Any, Any]:
        auth = aiohttp.BasicAuth(rs, SECRETS[rs]) if rs else None
        data = {"token": token, **extra}
        async with self.http.post(self.url + "/oauth/introspect", data=data, auth=auth) as resp:
            return resp.status, await resp.json(), resp.headers

    async def verify(
        self,
        token: str | None,
        *,
        resource: str | None = FILES,
        scope: str | None = None,
        original_uri: str | None = None,
        scheme: str = "Bearer",
    ) -> tuple[int, Any]:
        headers: dict[str, str] = {}
        if token is not None:
            headers["Authorization"] = f"{scheme} {token}"
        if resource is not None:
            headers["X-Auth-Resource"] = resource
        if scope is not None:
            headers["X-Auth-Scope"] = scope
        if original_uri is not None:
            headers["X-Original-URI"] = original_uri
        async with self.http.get(self.url + "/auth/verify", headers=headers) as resp:
            await resp.read()
            return resp.status, resp.headers

    async def exchange(self, subject_token: str, rs: str = "files-rs", **extra: str) -> Any:
        data = {
            "grant_type": EXCHANGE_GRANT,
            "subject_token": subject_token,
            "subject_token_type": ACCESS_TOKEN_TYPE,
            **extra,
        }
        auth = aiohttp.BasicAuth(rs, SECRETS[rs])
        async with self.http.post(self.url + "/oauth/token", data=data, auth=auth) as resp:
            return resp.status, await resp.json()

    async def jwks(self) -> dict[str, Any]:
        async with self.http.get(self.url + "/oauth/jwks") as resp:
            assert resp.status == 200, await resp.text()
            body: dict[str, Any] = await resp.json(content_type=None)
            return body


@pytest.fixture
async def rs_factory(http: aiohttp.ClientSession) -> AsyncIterator[Any]:
    """``make(**config_overrides, storage=…, clock=…)``: a daemon on a fresh port. Pass
    the storage and clock of another one to run a second replica of it."""
    stack: list[Any] = []

    async def make(
        *, storage: MemoryStorage | None = None, clock: FakeClock | None = None, **overrides: Any
    ) -> RsDaemon:
        overrides.setdefault("resources", resources())
        overrides.setdefault("provider", local_provider())
        overrides.setdefault("clients", clients())
        port = free_port()
        config = base_config(port, **overrides)
        storage = storage or MemoryStorage()
        clock = clock or FakeClock()
        auditor = Auditor()
        app = create_app(config, storage=storage, clock=clock, auditor=auditor)
        ctx = running(app, port)
        url = await ctx.__aenter__()
        stack.append(ctx)
        return RsDaemon(url, config, storage, clock, auditor, http, app)

    yield make
    for ctx in reversed(stack):
        await ctx.__aexit__(None, None, None)


@pytest.fixture
async def rs(rs_factory: Any) -> RsDaemon:
    daemon: RsDaemon = await rs_factory()
    return daemon

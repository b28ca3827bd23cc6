"""The application factory and the server runner.

``create_app(config)`` builds everything from the (frozen) config and wires one cleanup
context per resource: storage, provider, garbage collection. Nothing is global: tests
build as many apps as they like, each with its own storage, provider and clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import suppress
from pathlib import Path

import structlog
from aiohttp import web

from mcp_oauthd.clock import Clock, SystemClock
from mcp_oauthd.config.models import Config
from mcp_oauthd.http import api, browser, discovery, keys
from mcp_oauthd.http.cookies import BrowserCookies
from mcp_oauthd.http.middleware import (
    error_middleware,
    request_id_middleware,
    security_headers_middleware,
)
from mcp_oauthd.http.pages import Pages
from mcp_oauthd.oauth import metadata as md
from mcp_oauthd.oauth.redirects import RedirectPolicy
from mcp_oauthd.oauth.redirects import validate as validate_redirect
from mcp_oauthd.providers import build_provider
from mcp_oauthd.providers.base import Provider, UpstreamError
from mcp_oauthd.security.audit import Auditor
from mcp_oauthd.security.keys import load_key_material
from mcp_oauthd.service.authorize import AuthorizeService
from mcp_oauthd.service.clients import ClientRegistry
from mcp_oauthd.service.context import Services
from mcp_oauthd.service.token import TokenService
from mcp_oauthd.storage import build_storage
from mcp_oauthd.storage.base import Storage
from mcp_oauthd.storage.gc import run_gc_forever

log = structlog.get_logger("mcp_oauthd")
GC_INTERVAL = 60.0
STATIC_PATH = "/static"


def create_app(
    config: Config,
    *,
    storage: Storage | None = None,
    provider: Provider | None = None,
    clock: Clock | None = None,
    auditor: Auditor | None = None,
    gc_interval: float = GC_INTERVAL,
    run_gc: bool = True,
) -> web.Application:
    clock = clock or SystemClock()
    storage = storage or build_storage(config.storage)
    provider = provider or build_provider(
        config.provider, issuer=config.issuer, storage=storage, clock=clock
    )
    auditor = auditor or Auditor()
    policy = RedirectPolicy(
        allow_custom_schemes=config.security.redirect.allow_custom_schemes,
        allow_http=config.security.redirect.allow_http,
    )
    for client in config.clients:
        for uri in client.redirect_uris:
            validate_redirect(uri, policy)
    material = load_key_material(config)
    services = Services(
        config=config,
        storage=storage,
        provider=provider,
        clients=ClientRegistry(config, storage),
        keyring=material.keyring,
        signer=material.signer,
        clock=clock,
        auditor=auditor,
    )
    https = config.issuer.startswith("https://")
    prefix = md.issuer_path(config.issuer)

    app = web.Application(
        middlewares=[
            request_id_middleware,
            security_headers_middleware(https),
            error_middleware,
        ],
        client_max_size=256 * 1024,
    )
    app[keys.CONFIG] = config
    app[keys.SERVICES] = services
    app[keys.AUTHORIZE] = AuthorizeService(services)
    app[keys.TOKENS] = TokenService(services)
    app[keys.PAGES] = Pages(config.issuer + STATIC_PATH)
    app[keys.HTML_PATHS] = browser.html_paths(prefix)
    app[browser.COOKIES] = BrowserCookies(services.signer, https)

    discovery.add_routes(app, config, md.authorization_server_metadata(config))
    browser.add_routes(app, prefix)
    api.add_routes(app, prefix)
    static_dir = Path(__file__).parent / "http" / "static"
    app.router.add_static(prefix + STATIC_PATH, static_dir, append_version=False)

    async def storage_ctx(_: web.Application) -> AsyncIterator[None]:
        await storage.open()
        yield
        await storage.close()

    async def provider_ctx(_: web.Application) -> AsyncIterator[None]:
        try:
            await provider.start()
        except UpstreamError as exc:
            # Serve anyway: the provider retries discovery on first use.
            log.warning("provider not ready at start-up", provider=provider.name, error=str(exc))
        yield
        await provider.close()

    async def gc_ctx(_: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(run_gc_forever(storage, clock, gc_interval, log))
        yield
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.extend([storage_ctx, provider_ctx])
    if run_gc:  # with worker processes, one of them collects garbage
        app.cleanup_ctx.append(gc_ctx)
    return app

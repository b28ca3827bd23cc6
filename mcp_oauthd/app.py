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
from typing import Any

import structlog
from aiohttp import web
from opentelemetry.sdk.trace.export import SpanExporter

from mcp_oauthd.clock import Clock, SystemClock
from mcp_oauthd.config.models import Config
from mcp_oauthd.http import api, browser, discovery, keys, openapi, registration, resource
from mcp_oauthd.http.cookies import BrowserCookies
from mcp_oauthd.http.cors import setup_cors
from mcp_oauthd.http.middleware import pipeline
from mcp_oauthd.http.pages import Pages
from mcp_oauthd.http.ratelimit import RateLimitGate
from mcp_oauthd.oauth import metadata as md
from mcp_oauthd.oauth.redirects import RedirectPolicy
from mcp_oauthd.observability.instrumented import instrument_provider, instrument_storage
from mcp_oauthd.observability.metrics import METRICS, METRICS_PATH, Metrics, serve_separately
from mcp_oauthd.observability.tracing import TRACING, build_tracing
from mcp_oauthd.providers import build_provider
from mcp_oauthd.providers.base import Provider, UpstreamError
from mcp_oauthd.security.audit import Auditor
from mcp_oauthd.security.keys import load_key_material
from mcp_oauthd.security.ratelimit import RateLimiter, build_rate_limiter
from mcp_oauthd.service.authorize import AuthorizeService
from mcp_oauthd.service.cimd import CimdFetcher
from mcp_oauthd.service.clients import ClientRegistry
from mcp_oauthd.service.context import Services
from mcp_oauthd.service.introspect import IntrospectionService
from mcp_oauthd.service.jwt import SigningKeyManager
from mcp_oauthd.service.registration import RegistrationService
from mcp_oauthd.service.reload import validate_clients
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
    rate_limiter: RateLimiter | None = None,
    gc_interval: float = GC_INTERVAL,
    run_gc: bool = True,
    span_exporter: SpanExporter | None = None,
    worker: int = 0,
) -> web.Application:
    """Build the app. ``span_exporter`` turns tracing on with that exporter whatever the
    config says (tests pass an in-memory one). ``worker``: this process's index among
    ``server.workers``; each worker's separate metrics listener is on ``port + worker``."""
    clock = clock or SystemClock()
    obs = config.observability
    metrics = (
        Metrics(
            static_client_ids=[c.client_id for c in config.clients],
            expose_client_ids=obs.metrics.expose_client_ids,
            gauge_refresh_interval=obs.metrics.gauge_refresh_interval,
        )
        if obs.metrics.enabled
        else None
    )
    tracing = build_tracing(obs.tracing, exporter=span_exporter)
    raw_storage = build_storage(config.storage) if storage is None else storage
    # Both wrappers are the identity when metrics and tracing are off.
    storage = instrument_storage(raw_storage, metrics, tracing)
    if provider is None:
        provider = build_provider(
            config.provider, issuer=config.issuer, storage=storage, clock=clock
        )
    provider = instrument_provider(provider, metrics, tracing)
    auditor = Auditor() if auditor is None else auditor
    if metrics is not None:
        auditor.add_listener(metrics.on_audit)
    policy = RedirectPolicy(
        allow_custom_schemes=config.security.redirect.allow_custom_schemes,
        allow_http=config.security.redirect.allow_http,
    )
    validate_clients(config)
    material = load_key_material(config)
    cimd = (
        CimdFetcher(
            config.cimd,
            policy=policy,
            known_scopes=[s for r in config.resources for s in r.scopes],
            clock=clock,
            auditor=auditor,
        )
        if config.cimd.enabled
        else None
    )
    services = Services(
        config=config,
        storage=storage,
        provider=provider,
        clients=ClientRegistry(config, storage, clock=clock, cimd=cimd),
        keyring=material.keyring,
        signer=material.signer,
        clock=clock,
        auditor=auditor,
        signing_keys=(
            SigningKeyManager(config, storage, material.keyring, clock)
            if config.tokens.format == "jwt"
            else None
        ),
    )
    https = config.issuer.startswith("https://")
    prefix = md.issuer_path(config.issuer)

    # `is None`, not `or`: an empty in-memory limiter has len() 0 and is falsy.
    limiter = build_rate_limiter(config) if rate_limiter is None else rate_limiter
    pages = Pages(config.issuer + STATIC_PATH)
    html_paths = browser.html_paths(prefix)
    requests = pipeline(
        services,
        https=https,
        rate_limits=RateLimitGate(services, limiter) if config.rate_limits.enabled else None,
        metrics=metrics,
        tracing=tracing,
        pages=pages,
        html_paths=html_paths,
    )
    app = web.Application(middlewares=[requests.middleware], client_max_size=256 * 1024)
    app[keys.RATE_LIMITER] = limiter
    app[keys.CONFIG] = config
    app[keys.SERVICES] = services
    app[keys.AUTHORIZE] = AuthorizeService(services)
    app[keys.TOKENS] = TokenService(services)
    app[keys.PAGES] = pages
    app[keys.HTML_PATHS] = html_paths
    app[browser.COOKIES] = BrowserCookies(services.signer, https)

    registrations = RegistrationService(services)

    def as_meta(current: Config) -> dict[str, Any]:
        return md.authorization_server_metadata(
            current,
            introspection_enabled=True,
            registration_enabled=registrations.enabled,
            cimd_enabled=cimd is not None,
        )

    discovery.add_routes(app, config, as_meta)
    registration.add_routes(app, prefix, registrations)
    browser.add_routes(app, prefix)
    hot = api.add_routes(app, prefix)
    hot.update(resource.add_routes(app, prefix, IntrospectionService(services)))
    openapi.add_routes(app, config)
    static_dir = Path(__file__).parent / "http" / "static"
    app.router.add_static(prefix + STATIC_PATH, static_dir, append_version=False)
    if metrics is not None:
        app[METRICS] = metrics
        # Gauges count from the unwrapped storage: a scrape is not storage traffic.
        metrics.bind_state(
            storage=raw_storage,
            clock=clock,
            static_clients=len(config.clients),
            keys={
                ("encryption", "encryption"): lambda: len(material.keyring.key_ids),
                ("signing", "cookie"): lambda: 1,
            },
        )
        if services.signing_keys is not None:
            manager = services.signing_keys

            def jwt_keys() -> int:  # current, next and retired-but-published keys
                states = manager.states()
                return 0 if states is None else 1 + len(states.following) + len(states.previous)

            metrics.add_key_source("signing", "jwt", jwt_keys)
        if obs.metrics.port is None:
            app.router.add_get(METRICS_PATH, metrics.handler)
    if tracing is not None:
        app[TRACING] = tracing

    async def storage_ctx(_: web.Application) -> AsyncIterator[None]:
        await storage.open()
        yield
        await storage.close()

    async def signing_keys_ctx(_: web.Application) -> AsyncIterator[None]:
        # Load (or create) the shared keys before serving; then follow other replicas'
        # rotations and make the scheduled ones, driven by the clock.
        manager = services.signing_keys
        assert manager is not None
        await manager.refresh()
        task = asyncio.create_task(manager.run_forever())
        yield
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task

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

    async def limiter_ctx(_: web.Application) -> AsyncIterator[None]:
        yield
        await limiter.close()

    app.cleanup_ctx.extend([storage_ctx, provider_ctx, limiter_ctx])
    if cimd is not None:
        fetcher = cimd

        async def cimd_ctx(_: web.Application) -> AsyncIterator[None]:
            yield
            await fetcher.close()

        app.cleanup_ctx.append(cimd_ctx)
    if services.signing_keys is not None:
        app.cleanup_ctx.append(signing_keys_ctx)
    if run_gc:  # with worker processes, one of them collects garbage
        app.cleanup_ctx.append(gc_ctx)
    if metrics is not None and obs.metrics.port is not None:
        metrics_port = obs.metrics.port + worker if obs.metrics.port else 0

        async def metrics_listener_ctx(_: web.Application) -> AsyncIterator[None]:
            runner = await serve_separately(metrics, obs.metrics.host, metrics_port)
            yield
            await runner.cleanup()

        app.cleanup_ctx.append(metrics_listener_ctx)
    if tracing is not None:
        traces = tracing

        async def tracing_ctx(_: web.Application) -> AsyncIterator[None]:
            yield
            # Flushing may wait on the collector: never block the event loop on it.
            await asyncio.to_thread(traces.shutdown)

        app.cleanup_ctx.append(tracing_ctx)
    # Last: CORS picks routes by path prefix, so it must see every route (http/cors.py).
    with_cors = setup_cors(app, config)
    # A route with CORS keeps the normal way: aiohttp-cors answers through the router.
    app[keys.HOT_LANE] = requests.lane(
        {route: handler for route, handler in hot.items() if route[1] not in with_cors}
    )
    return app

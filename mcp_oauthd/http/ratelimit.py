"""Per-IP rate limits on every endpoint, with a separate budget per endpoint family."""

from __future__ import annotations

from aiohttp import web

from mcp_oauthd.config.models import BudgetConfig, Config
from mcp_oauthd.http import keys
from mcp_oauthd.http.client_ip import client_ip
from mcp_oauthd.http.middleware import Handler
from mcp_oauthd.oauth import metadata as md
from mcp_oauthd.oauth.errors import RateLimited
from mcp_oauthd.security.ratelimit import Budget, MemoryRateLimiter, RateLimiter

UNLIMITED = frozenset({"/healthz", "/readyz", "/metrics"})


def budget(config: BudgetConfig) -> Budget:
    return Budget(config.per_minute, config.burst)


def route_budgets(config: Config) -> dict[str, tuple[str, Budget]]:
    """Exact path -> (limiter name, budget). Other paths use the default budget."""
    prefix = md.issuer_path(config.issuer)
    limits = config.rate_limits
    table = {
        md.AUTHORIZE_PATH: ("authorize", limits.authorize),
        md.CONSENT_PATH: ("authorize", limits.authorize),
        md.CALLBACK_PATH: ("authorize", limits.authorize),
        md.LOGIN_PATH: ("login", limits.login),
        md.TOKEN_PATH: ("token", limits.token),
        md.REVOKE_PATH: ("token", limits.token),
        md.REGISTER_PATH: ("registration", limits.registration),
        md.INTROSPECT_PATH: ("introspect", limits.introspect),
        "/auth/verify": ("introspect", limits.introspect),
    }
    return {prefix + path: (name, budget(cfg)) for path, (name, cfg) in table.items()}


async def check(
    request: web.Request,
    limiter_name: str,
    key: str,
    limit: Budget,
    limiter: RateLimiter | None = None,
) -> None:
    """Take one token; raise ``RateLimited`` (429 + Retry-After) when the bucket is empty.
    The first refusal of a run is audited; the rest are cheap."""
    services = request.app[keys.SERVICES]
    if limiter is None:
        limiter = request.app[keys.RATE_LIMITER]
    decision = await limiter.hit(f"{limiter_name}:{key}", limit, services.now())
    if decision.allowed:
        return
    if decision.first_refusal:
        services.auditor.emit("rate_limited", limiter=limiter_name, ip=client_ip(request))
    raise RateLimited(decision.retry_after)


def rate_limit_middleware(config: Config, limiter: RateLimiter) -> web.middleware:  # type: ignore[valid-type]
    table = route_budgets(config)
    registration_prefix = md.issuer_path(config.issuer) + md.REGISTER_PATH + "/"
    default = ("default", budget(config.rate_limits.default))
    registration = table[md.issuer_path(config.issuer) + md.REGISTER_PATH]
    # The resource servers' per-request checks keep their (large) budget in this process
    # even when the shared limiter is Redis: it is an abuse ceiling, not a quota, and a
    # second Redis round trip would double the cost of the hottest path.
    local = MemoryRateLimiter(config.rate_limits.max_keys)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path not in UNLIMITED and config.rate_limits.enabled:
            if path.startswith(registration_prefix):
                name, limit = registration
            else:
                name, limit = table.get(path, default)
            await check(
                request,
                name,
                client_ip(request),
                limit,
                local if name == "introspect" else None,
            )
        return await handler(request)

    return middleware

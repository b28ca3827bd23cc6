"""Per-IP rate limits on every endpoint, with a separate budget per endpoint family."""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn

from aiohttp import web

from mcp_oauthd.config.models import BudgetConfig, Config
from mcp_oauthd.http import keys
from mcp_oauthd.http.client_ip import resolve_client_ip
from mcp_oauthd.oauth import metadata as md
from mcp_oauthd.oauth.errors import RateLimited
from mcp_oauthd.security.ratelimit import Budget, Decision, MemoryRateLimiter, RateLimiter

if TYPE_CHECKING:
    from mcp_oauthd.service.context import Services

UNLIMITED = frozenset({"/healthz", "/readyz", "/metrics"})
#: How many distinct paths the gate remembers the rule of (the app's own are far fewer).
MAX_REMEMBERED_PATHS = 256


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
    if not decision.allowed:
        refuse_for(services, request, limiter_name, decision)


def refuse_for(
    services: Services, request: web.Request, limiter_name: str, decision: Decision
) -> NoReturn:
    """Raise the 429; the first refusal of a run is audited."""
    if decision.first_refusal:
        ip = resolve_client_ip(request, services.config.proxy)
        services.auditor.emit("rate_limited", limiter=limiter_name, ip=ip)
    raise RateLimited(decision.retry_after)


class RateLimitGate:
    """The per-IP, per-endpoint-family check the request pipeline makes before every
    handler (:mod:`mcp_oauthd.http.middleware`)."""

    def __init__(self, services: Services, limiter: RateLimiter) -> None:
        config = services.config
        self._services = services
        self._limiter = limiter
        self._table = route_budgets(config)
        prefix = md.issuer_path(config.issuer)
        self._registration_prefix = prefix + md.REGISTER_PATH + "/"
        self._registration = self._table[prefix + md.REGISTER_PATH]
        self._default = ("default", budget(config.rate_limits.default))
        # The resource servers' per-request checks keep their (large) budget in this
        # process even when the shared limiter is Redis: it is an abuse ceiling, not a
        # quota, and a Redis round trip would double the cost of the hottest path.
        self._local = MemoryRateLimiter(config.rate_limits.max_keys)
        # An in-process shared limiter is consulted without a coroutine, like the above.
        # (exactly that class: a subclass may count or change `hit`, which `take` bypasses)
        self._shared_local = limiter if type(limiter) is MemoryRateLimiter else None
        # path -> (limiter name, budget, in-process limiter or None), resolved once: `take`
        # runs before every request. Other paths are added on first sight, up to a bound
        # (unknown paths all share the default rule, so a scan cannot grow this).
        self._rules: dict[str, tuple[str, Budget, MemoryRateLimiter | None]] = {}
        for path, (name, limit) in self._table.items():
            self._rules[path] = (name, limit, self._in_process(name))
        for path in UNLIMITED:
            self._rules.pop(path, None)
        self._proxy_config: object = None
        self._trust_proxy = False

    def _in_process(self, name: str) -> MemoryRateLimiter | None:
        return self._local if name == "introspect" else self._shared_local

    def _rule(self, path: str) -> tuple[str, Budget, MemoryRateLimiter | None]:
        if path.startswith(self._registration_prefix):
            name, limit = self._registration
        else:
            name, limit = self._default
        rule = (name, limit, self._in_process(name))
        if len(self._rules) < MAX_REMEMBERED_PATHS:
            self._rules[path] = rule
        return rule

    def take(self, request: web.Request, now: float) -> tuple[str, Budget] | None:
        """Take this request's token where the bucket is in this process (raising
        ``RateLimited`` when it is empty); otherwise return the (limiter, budget) that
        :meth:`check_shared` must take from the shared limiter."""
        path = request.path
        rule = self._rules.get(path)
        if rule is None:
            if path in UNLIMITED:
                return None
            rule = self._rule(path)
        name, limit, limiter = rule
        if limiter is None:
            return name, limit
        proxy = self._services.config.proxy
        if proxy is not self._proxy_config:  # the config was (re)loaded: look again
            self._proxy_config = proxy
            self._trust_proxy = bool(proxy.trusted_hops or proxy.trusted_cidrs)
        # Without a trusted proxy the peer is the client: no header to read.
        ip = resolve_client_ip(request, proxy) if self._trust_proxy else request.remote or "unknown"
        decision = limiter.take(name + ":" + ip, limit, now)
        if not decision.allowed:
            refuse_for(self._services, request, name, decision)
        return None

    async def check_shared(self, request: web.Request, rule: tuple[str, Budget]) -> None:
        name, limit = rule
        ip = resolve_client_ip(request, self._services.config.proxy)
        decision = await self._limiter.hit(f"{name}:{ip}", limit, self._services.now())
        if not decision.allowed:
            refuse_for(self._services, request, name, decision)

    async def check(self, request: web.Request, now: float) -> None:
        rule = self.take(request, now)
        if rule is not None:
            await self.check_shared(request, rule)

"""Prometheus metrics: one ``CollectorRegistry`` per app, served at ``/metrics``.

Nothing here touches prometheus-client's global default registry, so any number of apps
(tests build hundreds) live in one process without "duplicated timeseries" errors.

Families (the names the Grafana dashboard in ``deploy/grafana/`` uses):

- ``oauth_http_*``: requests, latency and in-flight requests by *route template* (never
  the raw path: ``/oauth/register/{client_id}``, not one series per client) and status;
- ``oauth_*`` flow and security counters, fed by the :class:`~mcp_oauthd.security.audit.
  Auditor`: every audit event increments ``oauth_audit_events_total{event}``, and the
  well-known ones (``AUDIT_COUNTERS``) a named counter as well, so a new security fact
  becomes a metric the moment somebody audits it;
- ``storage_*`` and ``provider_*``: filled by the wrappers in
  :mod:`mcp_oauthd.observability.instrumented` around every storage and provider call;
- gauges for live grants, clients and keys, recounted from storage **at most once per
  ``gauge_refresh_interval``** when scraped (a large store is never scanned on every
  scrape, and nothing runs in the background when nobody scrapes).

Label values are bounded: the route templates, operations and event names are fixed by
the code; values taken from audit fields are checked against a known set or a short
pattern and capped in number (``other`` beyond). There is never a user id in a label, and
a client id only with ``observability.metrics.expose_client_ids`` and only for static
(configured) clients, since anyone can register dynamic ones.
"""

from __future__ import annotations

import asyncio
import collections
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import structlog
from aiohttp import web
from aiohttp.web_urldispatcher import ResourceRoute
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from mcp_oauthd import __version__
from mcp_oauthd.clock import Clock
from mcp_oauthd.observability.plain import PlainCounter, PlainGauge, PlainHistogram
from mcp_oauthd.storage.base import ClientKind, CountsForGauges, Storage, StorageError

__all__ = [
    "AUDIT_COUNTERS",
    "METRICS",
    "Metrics",
    "method_label",
    "route_template",
]

log = structlog.get_logger("mcp_oauthd.metrics")


HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STORAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
PROVIDER_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

OTHER = "other"
GAUGE_REFRESH_TIMEOUT = 5.0
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9_.:\-]{1,48}$")
_MAX_FREE_VALUES = 32  # distinct free-form values per label before they become "other"
_STATIC_OTHER = "_dynamic"
_CIMD_OTHER = "_cimd"


@dataclass(frozen=True)
class FromField:
    """A label read from an audit field: the first present of ``names``; kept if in
    ``allowed`` (or, with ``allowed=None``, if it is a short token), else ``other``;
    ``values`` translates raw values first (``True`` -> ``"public"``)."""

    names: tuple[str, ...]
    allowed: frozenset[str] | None = None
    default: str = "unknown"
    values: Mapping[object, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditCounter:
    """How one audit event moves one counter: constant labels plus labels from fields."""

    metric: str
    fixed: Mapping[str, str] = field(default_factory=dict)
    from_fields: Mapping[str, FromField] = field(default_factory=dict)


_REGISTRATION_LABELS = {
    "client_kind": FromField(
        ("client_kind", "kind"), frozenset(k.value for k in ClientKind), default="dynamic"
    ),
    "client_type": FromField(
        ("public",),
        frozenset({"public", "confidential"}),
        values={True: "public", False: "confidential"},
    ),
    "result": FromField(
        ("deduplicated",),
        frozenset({"created", "deduplicated"}),
        default="created",
        values={True: "deduplicated", False: "created"},
    ),
}
_REASON = FromField(("reason", "result", "error"), default=OTHER)


def _counter(metric: str, **fixed: str) -> tuple[AuditCounter]:
    return (AuditCounter(metric, fixed),)


# The audit event names the code emits, and the counters each one moves. Keep in sync
# with the event list in mcp_oauthd/security/audit.py. ``token.issued`` is special-cased
# in Metrics.on_audit (its ``grant`` field picks the counters).
AUDIT_COUNTERS: dict[str, tuple[AuditCounter, ...]] = {
    "authorization.started": _counter("oauth_authorizations_started"),
    "consent.granted": _counter("oauth_consent_decisions", decision="granted"),
    "consent.denied": _counter("oauth_consent_decisions", decision="denied"),
    "login.succeeded": _counter("oauth_logins", result="succeeded"),
    "login.failed": _counter("oauth_logins", result="failed"),
    "login.refused": _counter("oauth_logins", result="refused"),
    "login.upstream_error": _counter("oauth_logins", result="upstream_error"),
    "token.refreshed": (
        AuditCounter("oauth_refreshes", {"result": "rotated"}),
        AuditCounter("oauth_tokens_issued", {"grant_type": "refresh_token"}),
    ),
    "token.refresh_grace": _counter("oauth_refreshes", result="grace"),
    "token.revoked": (
        AuditCounter(
            "oauth_revocations",
            from_fields={"token_kind": FromField(("kind",), frozenset({"access", "refresh"}))},
        ),
    ),
    "grant.revoked": (AuditCounter("oauth_grants_revoked", from_fields={"reason": _REASON}),),
    "registration": (AuditCounter("oauth_registrations", from_fields=_REGISTRATION_LABELS),),
    "registration.refused": (
        AuditCounter("oauth_registrations_refused", from_fields={"reason": _REASON}),
    ),
    "token.exchanged": (
        AuditCounter("oauth_token_exchanges", {"result": "ok"}),
        AuditCounter("oauth_tokens_issued", {"grant_type": "token_exchange"}),
    ),
    "token_exchange.refused": _counter("oauth_token_exchanges", result="refused"),
    "rate_limited": (
        AuditCounter(
            "oauth_rate_limited",
            from_fields={"limiter": FromField(("limiter", "endpoint"), default=OTHER)},
        ),
    ),
    "pkce.failed": _counter("oauth_pkce_failures"),
    "code.reused": _counter("oauth_code_reuse"),
    "refresh.reused": _counter("oauth_refresh_reuse"),
    "cimd.fetched": _counter("oauth_cimd_fetches", result="ok"),
    "cimd.refused": _counter("oauth_cimd_fetches", result="refused"),
}

# token.issued carries grant="code" | "refresh_token" | "token_exchange" | ...
_GRANT_TYPES = {
    "code": "authorization_code",
    "authorization_code": "authorization_code",
    "refresh_token": "refresh_token",
    "exchange": "token_exchange",
    "token_exchange": "token_exchange",
}

_FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "oauth_authorizations_started": ("Authorization requests that passed validation.", ()),
    "oauth_consent_decisions": ("Consent page decisions.", ("decision",)),
    "oauth_logins": (
        "Login outcomes: succeeded, failed (wrong credentials), refused (access policy), "
        "upstream_error.",
        ("result",),
    ),
    "oauth_codes_exchanged": ("Authorization codes redeemed for tokens.", ()),
    "oauth_tokens_issued": ("Access tokens issued, by grant type.", ("grant_type",)),
    "oauth_refreshes": ("Refresh token uses: rotated, or grace (successor replayed).", ("result",)),
    "oauth_revocations": ("RFC 7009 revocations, by token kind.", ("token_kind",)),
    "oauth_grants_revoked": ("Grants revoked by the server, by reason.", ("reason",)),
    "oauth_registrations": (
        "Client registrations, by client kind, type (public or confidential) and result "
        "(created, or deduplicated: an identical public registration answered again).",
        ("client_kind", "client_type", "result"),
    ),
    "oauth_registrations_refused": ("Refused client registrations, by reason.", ("reason",)),
    "oauth_token_exchanges": ("RFC 8693 token exchanges.", ("result",)),
    "oauth_rate_limited": (
        "Rate-limit trips, by limiter (a run of refusals from one key counts once; the "
        "HTTP 429 count is in oauth_http_requests_total).",
        ("limiter",),
    ),
    "oauth_pkce_failures": ("Token requests whose PKCE verifier did not match.", ()),
    "oauth_code_reuse": ("Replays of an already redeemed authorization code.", ()),
    "oauth_refresh_reuse": ("Replays of a rotated refresh token (family revoked).", ()),
    "oauth_cimd_fetches": (
        "Client ID Metadata Document fetches from the network, by result (ok, refused).",
        ("result",),
    ),
}

METRICS_PATH = "/metrics"
# Paths whose requests are counted under their own fixed route label only.
_UNMATCHED = "unmatched"


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(request: web.Request) -> str:
    """The request method, or ``other``: a client may send any token as a method."""
    return request.method if request.method in _METHODS else OTHER


def route_template(request: web.Request) -> str:
    """The matched route's template (``/oauth/register/{client_id}``), never the raw path."""
    try:
        resource = request.match_info.route.resource
    except AttributeError:
        return _UNMATCHED
    if resource is None:
        return _UNMATCHED
    return resource.canonical


class _Bounded:
    """Keeps free-form label values few and short."""

    def __init__(self) -> None:
        self._seen: dict[str, set[str]] = {}

    def value(self, label: str, raw: object, allowed: frozenset[str] | None, default: str) -> str:
        if raw is None:
            return default
        text = str(raw)
        if allowed is not None:
            return text if text in allowed else OTHER
        if not _LABEL_VALUE.match(text):
            return OTHER
        seen = self._seen.setdefault(label, set())
        if text in seen:
            return text
        if len(seen) >= _MAX_FREE_VALUES:
            return OTHER
        seen.add(text)
        return text


class Metrics:
    """Every metric of one app, in its own registry."""

    def __init__(
        self,
        *,
        static_client_ids: Iterable[str] = (),
        expose_client_ids: bool = False,
        gauge_refresh_interval: float = 60.0,
        process_metrics: bool = True,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.expose_client_ids = expose_client_ids
        self.gauge_refresh_interval = gauge_refresh_interval
        self._static_ids = frozenset(static_client_ids)
        self._bounded = _Bounded()
        # event name -> (its audit_events label, the (counter, labels) it increments), for
        # the events whose labels are fixed (see on_audit).
        self._audit_plans: dict[
            str, tuple[tuple[str], tuple[tuple[PlainCounter, tuple[str, ...]], ...]]
        ] = {}
        reg = self.registry
        if process_metrics:
            ProcessCollector(registry=reg)
            PlatformCollector(registry=reg)
            GCCollector(registry=reg)

        Gauge("oauth_build_info", "Build information.", ["version"], registry=reg).labels(
            __version__
        ).set(1)
        http_labels = ["route", "method", "status"]
        # Updated on every request (and storage call): plain numbers, see plain.py.
        self.http_requests = PlainCounter(
            "oauth_http_requests", "HTTP requests served.", http_labels, reg
        )
        self.http_duration = PlainHistogram(
            "oauth_http_request_duration_seconds",
            "HTTP request latency, from the first middleware to the response.",
            http_labels,
            reg,
            HTTP_BUCKETS,
        )
        self.http_in_flight = PlainGauge(
            "oauth_http_requests_in_flight", "HTTP requests being served.", reg
        )

        extra = ["client_id"] if expose_client_ids else []
        # Plain numbers, like the HTTP families: every token request emits audit events,
        # and a prometheus-client child takes a lock per increment (a refresh grant spent
        # ~35k instructions here, bench/README.md).
        self._flow: dict[str, PlainCounter] = {
            name: PlainCounter(name, doc, [*labels, *extra], reg)
            for name, (doc, labels) in _FAMILIES.items()
        }
        self.audit_events = PlainCounter(
            "oauth_audit_events", "Audit events, by event name.", ["event"], reg
        )

        self.storage_ops = PlainCounter(
            "storage_operations",
            "Storage operations, by backend, operation and result.",
            ["backend", "operation", "result"],
            reg,
        )
        self.storage_duration = PlainHistogram(
            "storage_operation_duration_seconds",
            "Storage operation latency.",
            ["backend", "operation"],
            reg,
            STORAGE_BUCKETS,
        )
        self.provider_requests = Counter(
            "provider_requests",
            "Calls to the upstream identity provider, by provider, operation and result.",
            ["provider", "operation", "result"],
            registry=reg,
        )
        self.provider_duration = Histogram(
            "provider_request_duration_seconds",
            "Upstream identity provider call latency.",
            ["provider", "operation"],
            buckets=PROVIDER_BUCKETS,
            registry=reg,
        )
        self.provider_errors = Counter(
            "provider_errors",
            "Failed upstream calls, by provider, operation and error kind.",
            ["provider", "operation", "kind"],
            registry=reg,
        )

        self.active_grants = Gauge(
            "oauth_active_grants", "Live (unrevoked, unexpired) grants.", registry=reg
        )
        self.clients = Gauge("oauth_clients", "Known clients, by kind.", ["kind"], registry=reg)
        self.signing_keys = Gauge(
            "oauth_signing_keys", "Signing keys loaded, by purpose.", ["purpose"], registry=reg
        )
        self.encryption_keys = Gauge(
            "oauth_encryption_keys", "Encryption keys in the key ring.", registry=reg
        )
        self.gauges_refreshed = Gauge(
            "oauth_gauges_refreshed_timestamp_seconds",
            "When the storage-derived gauges were last recounted.",
            registry=reg,
        )
        self.gauge_refresh_failures = Counter(
            "oauth_gauge_refresh_failures", "Failed recounts of the gauges.", registry=reg
        )

        self._storage: Storage | None = None
        self._clock: Clock | None = None
        self._static_count = 0
        self._key_sources: dict[tuple[str, str], Callable[[], int]] = {}
        self._last_refresh: float | None = None
        self._refresh_lock = asyncio.Lock()

    # ------------------------------------------------------------------ audit -> counters
    def on_audit(self, event: str, record: Mapping[str, object]) -> None:
        """The Auditor listener: count every event, and the well-known ones by name."""
        plan = self._audit_plans.get(event)
        if plan is not None:  # the labels do not depend on the event's fields
            self.audit_events.inc(plan[0])
            for planned, series in plan[1]:
                planned.inc(series)
            return
        event_label = (self._bounded.value("event", event, None, OTHER),)
        self.audit_events.inc(event_label)
        rules = AUDIT_COUNTERS.get(event, ())
        if event == "token.issued":
            grant = _GRANT_TYPES.get(str(record.get("grant", "code")), OTHER)
            rules = (AuditCounter("oauth_tokens_issued", {"grant_type": grant}),)
            if grant == "authorization_code":
                rules += (AuditCounter("oauth_codes_exchanged"),)
        increments: list[tuple[PlainCounter, tuple[str, ...]]] = []
        for rule in rules:
            labels = dict(rule.fixed)
            for label, spec in rule.from_fields.items():
                raw = next((record[n] for n in spec.names if record.get(n) is not None), None)
                if isinstance(raw, str | bool | int) and raw in spec.values:
                    raw = spec.values[raw]
                labels[label] = self._bounded.value(label, raw, spec.allowed, spec.default)
            if self.expose_client_ids:
                labels["client_id"] = self.client_label(record.get("client_id"))
            counter = self._flow[rule.metric]
            # In the family's label order (a missing label is a KeyError, as labels() would
            # refuse it); every value is bounded (``_Bounded``), so the series are too.
            values = tuple(labels[name] for name in counter.labelnames)
            counter.inc(values)
            increments.append((counter, values))
        if (
            event in AUDIT_COUNTERS  # a fixed set of names: the plans stay few
            and event != "token.issued"
            and not self.expose_client_ids
            and not any(rule.from_fields for rule in rules)
        ):
            # Every later event of this name moves the same series: remember them (a
            # refresh grant emits one, and this listener was ~4% of it under load). The
            # event's own label is final too: _Bounded never drops a value it has kept.
            self._audit_plans[event] = (event_label, tuple(increments))

    def client_label(self, client_id: object) -> str:
        """Static client ids as they are; every other client collapses to its kind."""
        if client_id is None:
            return ""
        text = str(client_id)
        if text in self._static_ids:
            return text
        return _CIMD_OTHER if text.startswith("https://") else _STATIC_OTHER

    # ------------------------------------------------------------------ storage, provider
    def observe_storage(self, backend: str, operation: str, result: str, seconds: float) -> None:
        self.storage_ops.inc((backend, operation, result))
        self.storage_duration.observe((backend, operation), seconds)

    def storage_observer(self, backend: str, operation: str) -> Callable[[str, float], None]:
        """``observe_storage`` for one operation with its label tuples built once:
        storage calls are the most frequent thing measured."""
        counted = self.storage_ops.inc
        timed = self.storage_duration.observe
        ok = (backend, operation, "ok")
        labels = (backend, operation)

        def observe(result: str, seconds: float) -> None:
            counted(ok if result == "ok" else (backend, operation, result))
            timed(labels, seconds)

        return observe

    def observe_provider(
        self, provider: str, operation: str, error_kind: str | None, seconds: float
    ) -> None:
        self.provider_requests.labels(provider, operation, error_kind or "ok").inc()
        self.provider_duration.labels(provider, operation).observe(seconds)
        if error_kind is not None:
            self.provider_errors.labels(provider, operation, error_kind).inc()

    # ------------------------------------------------------------------ HTTP
    def http_started(self) -> None:
        self.http_in_flight.current += 1

    def http_observer(self) -> Callable[[object, web.Request, int, float], None]:
        """``observe(route, request, status, seconds)`` for the request pipeline
        (:mod:`mcp_oauthd.http.middleware`), which calls :meth:`http_started` first.
        ``route`` is the matched route, or the path itself for the hot lane's exact
        paths (whose requests have no match).

        Label values are bounded (route templates, methods, statuses)."""
        in_flight = self.http_in_flight
        counts = self.http_requests.values
        timed = self.http_duration.observe
        # (route, method, status) -> label values, for the app's own routes only: their
        # number is fixed, while a 404 or 405 brings a new system route every time.
        known: dict[tuple[object, str, int], tuple[str, str, str]] = {}

        def observe(route: object, request: web.Request, status: int, seconds: float) -> None:
            in_flight.current -= 1
            key = (route, request.method, status)
            labels = known.get(key)
            if labels is None:
                template = route if type(route) is str else route_template(request)
                labels = (template, method_label(request), str(status))
                if type(route) in (ResourceRoute, str) and len(known) < 4096:
                    known[key] = labels
            counts[labels] = counts.get(labels, 0.0) + 1.0  # PlainCounter.inc, inlined
            timed(labels, seconds)

        return observe

    async def handler(self, _: web.Request) -> web.Response:
        await self.refresh_gauges()
        response = web.Response(body=generate_latest(self.registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        response.headers["Cache-Control"] = "no-store"
        return response

    def render(self) -> str:
        return generate_latest(self.registry).decode("utf-8")

    # ------------------------------------------------------------------ gauges
    def bind_state(
        self,
        *,
        storage: Storage,
        clock: Clock,
        static_clients: int,
        keys: Mapping[tuple[str, str], Callable[[], int]] | None = None,
    ) -> None:
        """What the gauges are counted from. ``keys``: (gauge, purpose) -> count, with gauge
        ``signing`` or ``encryption``; more sources (JWT keys) may be added later."""
        self._storage = storage
        self._clock = clock
        self._static_count = static_clients
        self._key_sources.update(keys or {})

    def add_key_source(self, gauge: str, purpose: str, count: Callable[[], int]) -> None:
        self._key_sources[(gauge, purpose)] = count

    async def refresh_gauges(self, *, force: bool = False) -> None:
        """Recount from storage when the last count is older than the interval."""
        if self._storage is None or self._clock is None:
            return
        for (gauge, purpose), source in self._key_sources.items():
            if gauge == "encryption":
                self.encryption_keys.set(source())
            else:
                self.signing_keys.labels(purpose).set(source())
        now = self._clock.now()
        if not force and not self._stale(now):
            return
        async with self._refresh_lock:
            if not force and not self._stale(now):
                return  # a concurrent scrape recounted while we waited
            try:
                # Bounded: a slow store must not make the scrape itself time out.
                async with asyncio.timeout(GAUGE_REFRESH_TIMEOUT):
                    active, stored = await _gauge_counts(self._storage, now)
            except (StorageError, TimeoutError) as exc:
                self.gauge_refresh_failures.inc()
                log.warning("metrics gauges not refreshed", error=type(exc).__name__)
                return
            self.active_grants.set(active)
            by_kind = {kind.value: 0 for kind in ClientKind}
            for kind, count in stored.items():
                if kind is not ClientKind.STATIC:  # the config's count stands for these
                    by_kind[kind.value] = count
            by_kind[ClientKind.STATIC.value] = self._static_count
            for kind_label, count in by_kind.items():
                self.clients.labels(kind_label).set(count)
            self._last_refresh = now
            self.gauges_refreshed.set(now)

    def _stale(self, now: float) -> bool:
        return self._last_refresh is None or now - self._last_refresh >= (
            self.gauge_refresh_interval
        )


async def _gauge_counts(storage: Storage, now: float) -> tuple[int, dict[ClientKind, int]]:
    """(live grants, stored clients by kind): counted by the backend where it can
    (``CountsForGauges``), otherwise from its listings, a record per grant."""
    if isinstance(storage, CountsForGauges):
        return await storage.count_live_grants(now), await storage.count_clients_by_kind()
    grants = await storage.list_grants()
    clients = await storage.list_clients()
    active = sum(1 for g in grants if g.revoked_at is None and g.expires_at > now)
    return active, dict(collections.Counter(client.kind for client in clients))


METRICS = web.AppKey("metrics", Metrics)


async def serve_separately(metrics: Metrics, host: str, port: int) -> web.AppRunner:
    """A second, minimal listener that serves only ``/metrics`` (not the public one)."""
    app = web.Application()
    app.router.add_get(METRICS_PATH, metrics.handler)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("serving metrics", address=f"{host}:{port}", path=METRICS_PATH)
    return runner

"""OpenTelemetry traces: a span per request, per flow step, storage and upstream call.

``build_tracing(config)`` returns ``None`` for ``exporter: none`` (the default): then no
tracer provider, no middleware and no wrapper exists, and :func:`traced` and
:func:`upstream_call` cost one context-variable lookup.

Otherwise each app gets its **own** ``TracerProvider`` (never the global one, so several
apps, or a host process with its own OpenTelemetry set-up, do not fight over it), with
a parent-based ratio sampler and the configured exporter:

- ``otlp``: OTLP/HTTP protobuf to ``otlp_endpoint`` with ``otlp_headers``, batched in a
  background thread (an unreachable collector never slows a request);
- ``stdout``: each span as JSON on standard output, for debugging.

The server span of a request continues an incoming W3C ``traceparent``; the outgoing
calls to the upstream IdP carry one (:func:`upstream_call`), so the IdP's traces join ours.

What a span may hold: route templates, methods, status codes, operation and provider
names, the request id, error *types*. Never a URL query, a header value, an exception
message or a request argument: those can carry codes, tokens, secrets or user ids.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import IO, Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

import structlog
from aiohttp import web
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from mcp_oauthd import __version__
from mcp_oauthd.config.models import TracingConfig
from mcp_oauthd.observability.metrics import method_label, route_template

__all__ = [
    "TRACING",
    "UNTRACED_PATHS",
    "Tracing",
    "build_tracing",
    "traced",
    "upstream_call",
]

P = ParamSpec("P")
R = TypeVar("R")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

INSTRUMENTATION = "mcp_oauthd"
# Probes and scrapes every few seconds would drown the traces that matter.
UNTRACED_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})

# The tracer of the app serving the current request; None outside traced requests.
_TRACER: ContextVar[Tracer | None] = ContextVar("mcp_oauthd_tracer", default=None)
_PROPAGATOR = TraceContextTextMapPropagator()


def _exporter_for(config: TracingConfig, stream: IO[str] | None) -> SpanProcessor | None:
    if config.exporter == "otlp":
        # Imported here: the protobuf/requests stack loads only when it is used.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(
            endpoint=config.otlp_endpoint,
            headers={k: v.get_secret_value() for k, v in config.otlp_headers.items()},
            timeout=config.otlp_timeout,
        )
        return BatchSpanProcessor(exporter)
    if config.exporter == "stdout":
        return SimpleSpanProcessor(ConsoleSpanExporter(out=stream or sys.stdout))
    return None


class Tracing:
    """One app's tracer provider, tracer and request middleware."""

    def __init__(
        self,
        config: TracingConfig,
        *,
        exporter: SpanExporter | None = None,
        stream: IO[str] | None = None,
    ) -> None:
        resource = Resource.create(
            {"service.name": config.service_name, "service.version": __version__}
        )
        self.provider = TracerProvider(
            resource=resource, sampler=ParentBased(TraceIdRatioBased(config.sample_ratio))
        )
        if exporter is not None:
            # Tests (and embedders) bring their own exporter: export synchronously.
            self.provider.add_span_processor(SimpleSpanProcessor(exporter))
        else:
            processor = _exporter_for(config, stream)
            if processor is not None:
                self.provider.add_span_processor(processor)
        self.tracer: Tracer = self.provider.get_tracer(INSTRUMENTATION, __version__)

    def shutdown(self) -> None:
        """Flush pending spans and stop the export thread (blocking: run it off the loop)."""
        self.provider.shutdown()

    async def around(self, request: web.Request, call: Handler) -> web.StreamResponse:
        """Run ``call(request)`` in the request's server span. The request pipeline
        (:mod:`mcp_oauthd.http.middleware`) calls this inside the request id and outside the
        error renderer, so the span sees the final status of every response."""
        if request.path in UNTRACED_PATHS:
            return await call(request)
        tracer = self.tracer
        route = route_template(request)
        method = method_label(request)
        parent = _PROPAGATOR.extract(carrier=request.headers)
        attributes: dict[str, str | int] = {
            "http.request.method": method,
            "http.route": route,
        }
        # Read from the log context (bound by the pipeline) rather than the request key:
        # mcp_oauthd.http imports the services, which import this module.
        request_id = structlog.contextvars.get_contextvars().get("request_id")
        if isinstance(request_id, str):
            attributes["mcp_oauthd.request_id"] = request_id
        token = _TRACER.set(tracer)
        try:
            with tracer.start_as_current_span(
                f"{method} {route}",
                context=parent,
                kind=SpanKind.SERVER,
                attributes=attributes,
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                context = span.get_span_context()
                if context.is_valid:
                    # Every log line of this request, the access log included, can be
                    # joined to its trace.
                    structlog.contextvars.bind_contextvars(
                        trace_id=trace.format_trace_id(context.trace_id),
                        span_id=trace.format_span_id(context.span_id),
                    )
                status = 500
                try:
                    response = await call(request)
                    status = response.status
                    return response
                except web.HTTPException as exc:
                    status = exc.status
                    raise
                finally:
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(Status(StatusCode.ERROR))
        finally:
            _TRACER.reset(token)


def build_tracing(config: TracingConfig, *, exporter: SpanExporter | None = None) -> Tracing | None:
    """The app's tracing, or None when it is off (``exporter: none`` and none given)."""
    if exporter is None and config.exporter == "none":
        return None
    return Tracing(config, exporter=exporter)


def traced(
    name: str,
) -> Callable[[Callable[P, Coroutine[Any, Any, R]]], Callable[P, Coroutine[Any, Any, R]]]:
    """Decorate a flow step (an async method) so it runs in a child span named ``name``.

    Outside a traced request this is a plain call. The span records only the error type
    if the step raises (an OAuth error is an outcome, not a crash, but worth seeing).
    """

    def decorate(fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
        async def in_span(tracer: Tracer, *args: P.args, **kwargs: P.kwargs) -> R:
            with tracer.start_as_current_span(
                name, record_exception=False, set_status_on_exception=False
            ) as span:
                try:
                    return await fn(*args, **kwargs)
                except Exception as exc:
                    span.set_attribute("error.type", type(exc).__name__)
                    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                    raise

        # Not a coroutine function itself: outside a traced request it hands back the
        # step's own coroutine, so the untraced hot paths pay no extra frame.
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
            tracer = _TRACER.get()
            if tracer is None:
                return fn(*args, **kwargs)
            return in_span(tracer, *args, **kwargs)

        return wrapper

    return decorate


@contextmanager
def upstream_call(
    method: str, url: str, *, what: str, provider: str, headers: MutableMapping[str, str]
) -> Iterator[Span]:
    """A client span around one HTTP call to the upstream IdP, with W3C trace context
    injected into ``headers`` (``traceparent``). Outside a traced request: no span, no
    header, and the yielded span ignores everything."""
    tracer = _TRACER.get()
    if tracer is None:
        yield INVALID_SPAN
        return
    parts = urlsplit(url)
    attributes: dict[str, str | int] = {
        "http.request.method": method,
        "server.address": parts.hostname or "",
        "url.path": parts.path,  # the path only: a query could carry a credential
        "mcp_oauthd.provider": provider,
        "mcp_oauthd.upstream.call": what,
    }
    if parts.port is not None:
        attributes["server.port"] = parts.port
    with tracer.start_as_current_span(
        f"{method} {what}",
        kind=SpanKind.CLIENT,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        _PROPAGATOR.inject(headers)
        try:
            yield span
        except Exception as exc:
            span.set_attribute("error.type", type(exc).__name__)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise


TRACING = web.AppKey("tracing", Tracing)

"""OpenTelemetry traces: the span tree of each flow step, trace context in and out,
trace ids in the logs, the exporters, and no tracing at all by default."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import structlog
from aiohttp import web
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from mcp_oauthd.config.models import LoggingConfig, TracingConfig
from mcp_oauthd.http import keys
from mcp_oauthd.observability.logging import configure_logging
from mcp_oauthd.observability.tracing import TRACING, Tracing, build_tracing
from mcp_oauthd.providers.local import LocalProvider
from mcp_oauthd.testing.daemon import running
from mcp_oauthd.testing.fake_idp import FakeOidcProvider
from tests.conftest import free_port
from tests.observability.conftest import Observed


def root_of(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    """The one span named ``name`` that starts a trace here (no parent, or a remote one)."""
    [root] = [s for s in spans if s.name == name and (s.parent is None or s.parent.is_remote)]
    return root


def children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


def tree(spans: list[ReadableSpan], parent: ReadableSpan) -> dict[str, Any]:
    """{child name: its subtree}; repeated names merge."""
    out: dict[str, Any] = {}
    for child in children(spans, parent):
        out.setdefault(child.name, {}).update(tree(spans, child))
    return out


async def test_authorize_callback_and_token_each_have_their_span_tree(observed: Observed) -> None:
    await observed.daemon.tokens()
    spans = observed.finished()

    authorize = root_of(spans, "GET /oauth/authorize")
    assert authorize.kind is SpanKind.SERVER
    assert authorize.attributes is not None
    assert authorize.attributes["http.route"] == "/oauth/authorize"
    assert authorize.attributes["http.response.status_code"] == 200
    t = tree(spans, authorize)
    assert set(t) == {"authorize.validate", "authorize.start"}
    assert "storage.put_ephemeral" in t["authorize.start"]  # the flow waits for consent

    consent = tree(spans, root_of(spans, "POST /oauth/consent"))
    redirect = consent["consent.decide"]["authorize.redirect_upstream"]
    assert {"storage.put_ephemeral", "provider.authorization_url"} <= set(redirect)

    callback = tree(spans, root_of(spans, "GET /oauth/callback"))
    complete = callback["callback.complete"]
    assert {"storage.take_ephemeral", "provider.exchange", "callback.issue_code"} <= set(complete)
    assert "storage.take_ephemeral" in complete["provider.exchange"]  # the local code
    assert "storage.put_code" in complete["callback.issue_code"]

    token = tree(spans, root_of(spans, "POST /oauth/token"))
    grant = token["token.grant"]
    assert {"client.authenticate", "token.exchange_code"} <= set(grant)
    assert {"storage.consume_code", "storage.create_grant"} <= set(grant["token.exchange_code"])


async def test_every_span_of_one_request_shares_the_request_trace(observed: Observed) -> None:
    await observed.daemon.tokens()
    spans = observed.finished()
    token = root_of(spans, "POST /oauth/token")
    assert token.context is not None
    ours = [s for s in spans if s.context and s.context.trace_id == token.context.trace_id]
    assert len(ours) >= 5
    assert all(s.resource.attributes["service.name"] == "mcp-oauthd" for s in ours)
    storage = [s for s in ours if s.name.startswith("storage.")]
    assert storage
    assert all(s.attributes and s.attributes["db.system.name"] == "memory" for s in storage)


async def test_an_incoming_traceparent_is_continued(observed: Observed) -> None:
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    headers = {"traceparent": f"00-{trace_id}-{parent_id}-01"}
    async with observed.daemon.http.get(
        observed.url + "/.well-known/oauth-authorization-server", headers=headers
    ) as resp:
        assert resp.status == 200
    [span] = [s for s in observed.finished() if s.kind is SpanKind.SERVER]
    assert span.context is not None
    assert span.parent is not None
    assert trace.format_trace_id(span.context.trace_id) == trace_id
    assert trace.format_span_id(span.parent.span_id) == parent_id


async def test_probes_and_scrapes_make_no_traces(observed: Observed) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        async with observed.daemon.http.get(observed.url + path) as resp:
            assert resp.status == 200
    # Only the start-up trace (the provider getting ready) exists.
    assert [s.name for s in observed.finished()] == ["provider.start"]


@pytest.fixture
async def idp() -> AsyncIterator[FakeOidcProvider]:
    async with FakeOidcProvider() as fake:
        yield fake


async def test_calls_to_the_upstream_idp_carry_the_trace_context(
    observed_factory: Any, idp: FakeOidcProvider
) -> None:
    observed: Observed = await observed_factory(
        provider={
            "type": "oidc",
            "issuer": idp.issuer,
            "client_id": idp.client_id,
            "client_secret": idp.client_secret,
            "allow_insecure_http": True,
        }
    )
    idp.clock = observed.daemon.clock
    await observed.daemon.tokens()
    spans = observed.finished()
    callback = root_of(spans, "GET /oauth/callback")
    assert callback.context is not None
    [request] = idp.token_requests
    _, trace_id, span_id, _ = request.headers["traceparent"].split("-")
    assert trace_id == trace.format_trace_id(callback.context.trace_id)
    [client_span] = [
        s for s in spans if s.context and trace.format_span_id(s.context.span_id) == span_id
    ]
    assert client_span.kind is SpanKind.CLIENT
    assert client_span.attributes is not None
    assert client_span.attributes["http.response.status_code"] == 200
    assert client_span.attributes["mcp_oauthd.provider"] == "oidc"
    tree_ = tree(spans, callback)
    assert client_span.name in tree_["callback.complete"]["provider.exchange"]


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    configure_logging(LoggingConfig(level="debug", format="json"), stream=stream)
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


async def test_every_log_line_of_a_traced_request_carries_its_trace_and_span_id(
    observed: Observed, log_stream: io.StringIO
) -> None:
    await observed.daemon.tokens()
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    spans = {trace.format_span_id(s.context.span_id): s for s in observed.finished() if s.context}
    access = [line for line in lines if line["event"] == "request"]
    assert access
    for line in access:
        span = spans[line["span_id"]]
        assert span.kind is SpanKind.SERVER
        assert span.context is not None
        assert line["trace_id"] == trace.format_trace_id(span.context.trace_id)
    issued = next(line for line in lines if line["event"] == "token.issued")
    # Logged inside the token.exchange_code step: the line names that span, not the request.
    assert spans[issued["span_id"]].name == "token.exchange_code"


async def test_tracing_is_off_by_default_with_no_tracer_middleware_or_wrapper(
    observed_factory: Any, log_stream: io.StringIO
) -> None:
    observed: Observed = await observed_factory(trace=False)
    assert observed.daemon.config.observability.tracing.exporter == "none"
    assert TRACING not in observed.app
    # One request pipeline and nothing else: no tracing layer of its own.
    assert len(observed.app.middlewares) == 1
    services = observed.app[keys.SERVICES]
    # Metrics still wrap storage and provider, but with no tracer inside.
    assert object.__getattribute__(services.storage, "_tracer") is None
    assert object.__getattribute__(services.provider, "_tracer") is None
    await observed.daemon.tokens()
    assert observed.finished() == []
    assert "trace_id" not in log_stream.getvalue()
    assert build_tracing(TracingConfig()) is None


async def test_with_tracing_and_metrics_off_nothing_is_wrapped(observed_factory: Any) -> None:
    plain: Observed = await observed_factory(
        trace=False, observability={"metrics": {"enabled": False}}
    )
    services = plain.app[keys.SERVICES]
    assert services.storage is plain.daemon.storage
    assert type(services.provider) is LocalProvider
    assert [getattr(m, "__name__", "") for m in plain.app.middlewares if "metrics" in str(m)] == []
    async with plain.daemon.http.get(plain.url + "/metrics") as resp:
        assert resp.status == 404
    await plain.daemon.tokens()


async def test_a_zero_sample_ratio_records_no_span_but_serves_normally(
    observed_factory: Any,
) -> None:
    observed: Observed = await observed_factory(observability={"tracing": {"sample_ratio": 0.0}})
    await observed.daemon.tokens()
    assert observed.finished() == []


def test_the_stdout_exporter_prints_each_span_as_json() -> None:
    out = io.StringIO()
    tracing = Tracing(TracingConfig(exporter="stdout", service_name="auth-test"), stream=out)
    with tracing.tracer.start_as_current_span("token.grant"):
        pass
    tracing.shutdown()
    span = json.loads(out.getvalue())
    assert span["name"] == "token.grant"
    assert span["resource"]["attributes"]["service.name"] == "auth-test"


async def test_the_otlp_exporter_posts_protobuf_with_the_configured_headers() -> None:
    received: list[tuple[str, dict[str, str], bytes]] = []

    async def collect(request: web.Request) -> web.Response:
        received.append((request.path, dict(request.headers), await request.read()))
        return web.Response(status=200, content_type="application/x-protobuf")

    collector = web.Application()
    collector.router.add_post("/v1/traces", collect)
    port = free_port()
    async with running(collector, port):
        config = TracingConfig.model_validate(
            {
                "exporter": "otlp",
                "otlp_endpoint": f"http://127.0.0.1:{port}/v1/traces",
                "otlp_headers": {"x-api-key": {"value": "collector-key-123"}},
            }
        )
        tracing = build_tracing(config)
        assert tracing is not None
        with tracing.tracer.start_as_current_span("authorize.validate"):
            pass
        # The batch processor exports from its own thread; shutting down flushes it.
        await asyncio.to_thread(tracing.shutdown)
    [(path, headers, body)] = received
    assert path == "/v1/traces"
    assert headers["Content-Type"] == "application/x-protobuf"
    assert headers["x-api-key"] == "collector-key-123"
    assert b"authorize.validate" in body


def test_outside_a_traced_request_no_trace_context_is_sent_upstream() -> None:
    from mcp_oauthd.observability.tracing import upstream_call

    headers = {"Accept": "application/json"}
    with upstream_call(
        "POST", "https://idp.example.com/token", what="token", provider="oidc", headers=headers
    ) as span:
        span.set_attribute("http.response.status_code", 200)
    assert headers == {"Accept": "application/json"}
    assert not span.is_recording()

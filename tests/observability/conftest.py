"""A daemon whose metrics and spans the tests can read: the flows' `Daemon`, plus the
in-memory span exporter and a `/metrics` reader."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from mcp_oauthd.app import create_app
from mcp_oauthd.clock import FakeClock
from mcp_oauthd.security.audit import Auditor
from mcp_oauthd.storage.memory import MemoryStorage
from mcp_oauthd.testing.daemon import running
from tests.conftest import base_config
from tests.daemon import Daemon

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_metrics(text: str) -> Samples:
    """Every sample of a Prometheus exposition, keyed by (name, labels)."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels`` (0 if none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


@dataclass
class Observed:
    daemon: Daemon
    app: web.Application
    spans: InMemorySpanExporter

    @property
    def url(self) -> str:
        return self.daemon.url

    async def metrics_text(self, url: str | None = None) -> str:
        async with self.daemon.http.get((url or self.url) + "/metrics") as resp:
            assert resp.status == 200, await resp.text()
            assert resp.headers["Content-Type"].startswith("text/plain")
            return await resp.text()

    async def metrics(self) -> Samples:
        return parse_metrics(await self.metrics_text())

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())


@pytest.fixture
def span_exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.clear()


@pytest.fixture
async def observed_factory(
    port: int, http: aiohttp.ClientSession, span_exporter: InMemorySpanExporter
) -> AsyncIterator[Any]:
    """``await observed_factory(trace=True, **config_overrides)``: a running daemon."""
    stack: list[Any] = []

    async def make(*, trace: bool = True, **overrides: Any) -> Observed:
        config = base_config(port, **overrides)
        storage = MemoryStorage()
        clock = FakeClock()
        auditor = Auditor()
        app = create_app(
            config,
            storage=storage,
            clock=clock,
            auditor=auditor,
            span_exporter=span_exporter if trace else None,
        )
        ctx = running(app, port)
        url = await ctx.__aenter__()
        stack.append(ctx)
        return Observed(Daemon(url, config, storage, clock, auditor, http), app, span_exporter)

    yield make
    for ctx in reversed(stack):
        await ctx.__aexit__(None, None, None)


@pytest.fixture
async def observed(observed_factory: Any) -> Observed:
    result: Observed = await observed_factory()
    return result

"""Counters, histograms and a gauge kept in plain Python numbers, for the metrics updated
on every request (HTTP and storage).

prometheus-client's own children are thread-safe: each increment takes a lock, and a
histogram observation walks its buckets; with a counter, a histogram and the in-flight
gauge per request, plus the same per storage call, that was a measurable share of an
introspection (bench/README.md). These are only ever updated and collected on the event
loop's thread, so plain arithmetic is enough; the registry renders them exactly like the
library's own families (``_total``; ``_bucket``/``_count``/``_sum``).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import cast

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

__all__ = ["PlainCounter", "PlainGauge", "PlainHistogram"]

#: The library's own rendering of a bucket bound (``0.005``, ``1.0``, ``+Inf``).
_le = cast(Callable[[float], str], floatToGoString)


class PlainCounter(Collector):
    """A labelled counter: ``inc(labels)`` adds one to the series of that label tuple."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry
    ) -> None:
        self.name = name.removesuffix("_total")
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.values: dict[tuple[str, ...], float] = {}
        if not self.labelnames:
            # As prometheus-client's unlabelled counter: one series, 0 from the start.
            self.values[()] = 0.0
        registry.register(self)

    def inc(self, labels: tuple[str, ...], amount: float = 1.0) -> None:
        values = self.values
        values[labels] = values.get(labels, 0.0) + amount

    def value(self, labels: tuple[str, ...]) -> float:
        return self.values.get(labels, 0.0)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, value in self.values.items():
            family.add_metric(labels, value)
        yield family

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)


class _Series:
    __slots__ = ("counts", "total")

    def __init__(self, size: int) -> None:
        self.counts = [0] * size
        self.total = 0.0


class PlainHistogram(Collector):
    """A labelled histogram; ``le`` buckets are inclusive, as Prometheus defines them."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
        buckets: Sequence[float],
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.bounds = tuple(float(b) for b in buckets)
        self._les = tuple(_le(b) for b in (*self.bounds, float("inf")))
        self.series: dict[tuple[str, ...], _Series] = {}
        registry.register(self)

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = _Series(len(self.bounds) + 1)
        # bisect_left: the first bound >= value, i.e. the smallest bucket with value <= le.
        series.counts[bisect_left(self.bounds, value)] += 1
        series.total += value

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, series in self.series.items():
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for le, count in zip(self._les, series.counts, strict=True):
                cumulative += count
                buckets.append((le, cumulative))
            family.add_metric(labels, buckets, series.total)
        yield family

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)


class PlainGauge(Collector):
    """An unlabelled gauge with ``inc``/``dec``."""

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self.current = 0.0
        registry.register(self)

    def inc(self, amount: float = 1.0) -> None:
        self.current += amount

    def dec(self, amount: float = 1.0) -> None:
        self.current -= amount

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(self.name, self.documentation, value=self.current)

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(self.name, self.documentation)

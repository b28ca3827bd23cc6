"""The per-request metric families kept in plain numbers render exactly like
prometheus-client's own Counter and Histogram for the same observations."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from mcp_oauthd.observability.plain import PlainCounter, PlainGauge, PlainHistogram

BUCKETS = (0.005, 0.01, 0.025, 0.1, 1.0)
OBSERVED = [0.0, 0.005, 0.0050001, 0.01, 0.3, 1.0, 7.5, 0.02]


def _samples(registry: CollectorRegistry) -> set[str]:
    """Exposition lines without the ``_created`` samples (plain families have none)."""
    return {
        line
        for line in generate_latest(registry).decode().splitlines()
        if "_created" not in line and not line.startswith("# HELP")
    }


def test_a_plain_histogram_renders_like_the_library_histogram() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    plain = PlainHistogram("latency_seconds", "Latency.", ["route"], ours, BUCKETS)
    library = Histogram("latency_seconds", "Latency.", ["route"], registry=theirs, buckets=BUCKETS)
    for value in OBSERVED:
        plain.observe(("/a",), value)
        library.labels("/a").observe(value)
    plain.observe(("/b",), 0.01)
    library.labels("/b").observe(0.01)
    assert _samples(ours) == _samples(theirs)


def test_a_bucket_bound_is_inclusive() -> None:
    registry = CollectorRegistry()
    plain = PlainHistogram("h", "H.", [], registry, (0.01,))
    plain.observe((), 0.01)
    text = generate_latest(registry).decode()
    assert 'h_bucket{le="0.01"} 1.0' in text


def test_a_plain_counter_and_gauge_render_like_the_library_ones() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    counter = PlainCounter("requests", "Requests.", ["route", "status"], ours)
    library = Counter("requests", "Requests.", ["route", "status"], registry=theirs)
    gauge = PlainGauge("in_flight", "In flight.", ours)
    library_gauge = Gauge("in_flight", "In flight.", registry=theirs)
    for labels in [("/a", "200"), ("/a", "200"), ("/b", "404")]:
        counter.inc(labels)
        library.labels(*labels).inc()
    gauge.inc()
    gauge.inc()
    gauge.dec()
    library_gauge.inc()
    assert _samples(ours) == _samples(theirs)
    assert counter.value(("/a", "200")) == 2


def test_an_unlabelled_plain_counter_shows_zero_from_the_start_like_the_library_one() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    counter = PlainCounter("codes_exchanged", "Codes exchanged.", [], ours)
    library = Counter("codes_exchanged", "Codes exchanged.", registry=theirs)
    assert _samples(ours) == _samples(theirs)
    counter.inc(())
    library.inc()
    assert _samples(ours) == _samples(theirs)

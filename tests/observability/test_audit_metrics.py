"""Every audit event is a counter increment, with bounded label values."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mcp_oauthd.observability.instrumented import InstrumentedProvider, InstrumentedStorage
from mcp_oauthd.observability.metrics import AUDIT_COUNTERS, Metrics
from mcp_oauthd.providers.base import UpstreamError
from mcp_oauthd.security.audit import Auditor
from mcp_oauthd.storage.base import ClientKind, StorageUnavailable
from mcp_oauthd.storage.memory import MemoryStorage
from mcp_oauthd.testing.storage_conformance import (
    NOW,
    create_full_grant,
    make_client,
    make_grant,
)
from tests.observability.conftest import parse_metrics, value


def audited(**kwargs: Any) -> tuple[Auditor, Metrics]:
    metrics = Metrics(process_metrics=False, **kwargs)
    auditor = Auditor()
    auditor.add_listener(metrics.on_audit)
    return auditor, metrics


def samples(metrics: Metrics) -> Any:
    return parse_metrics(metrics.render())


@pytest.mark.parametrize("event", sorted(AUDIT_COUNTERS))
def test_each_known_audit_event_moves_its_named_counter(event: str) -> None:
    auditor, metrics = audited()
    auditor.emit(event, client_id="cli")
    m = samples(metrics)
    for rule in AUDIT_COUNTERS[event]:
        assert value(m, rule.metric + "_total", **dict(rule.fixed)) == 1, rule
    assert value(m, "oauth_audit_events_total", event=event) == 1


@pytest.mark.parametrize("event", sorted(AUDIT_COUNTERS))
def test_repeated_events_keep_counting_on_the_same_series(event: str) -> None:
    """The second and later events of a name may take a remembered path: it must count
    exactly as the first did."""
    auditor, metrics = audited()
    for _ in range(3):
        auditor.emit(event, client_id="cli")
    m = samples(metrics)
    for rule in AUDIT_COUNTERS[event]:
        assert value(m, rule.metric + "_total", **dict(rule.fixed)) == 3, rule
    assert value(m, "oauth_audit_events_total", event=event) == 3


def test_events_whose_labels_come_from_fields_are_counted_by_each_events_fields() -> None:
    auditor, metrics = audited()
    auditor.emit("token.revoked", client_id="cli", kind="access")
    auditor.emit("token.revoked", client_id="cli", kind="refresh")
    auditor.emit("token.revoked", client_id="cli", kind="refresh")
    m = samples(metrics)
    assert value(m, "oauth_revocations_total", token_kind="access") == 1
    assert value(m, "oauth_revocations_total", token_kind="refresh") == 2


def test_with_client_ids_exposed_repeated_events_are_counted_per_client() -> None:
    auditor, metrics = audited(static_client_ids=["cli", "other"], expose_client_ids=True)
    auditor.emit("token.refreshed", client_id="cli")
    auditor.emit("token.refreshed", client_id="other")
    auditor.emit("token.refreshed", client_id="other")
    m = samples(metrics)
    assert value(m, "oauth_refreshes_total", result="rotated", client_id="cli") == 1
    assert value(m, "oauth_refreshes_total", result="rotated", client_id="other") == 2


def test_an_unknown_event_still_counts_under_its_name() -> None:
    auditor, metrics = audited()
    auditor.emit("introspection.refused", client_id="cli")
    assert value(samples(metrics), "oauth_audit_events_total", event="introspection.refused") == 1


def test_rate_limits_are_counted_by_limiter_or_by_endpoint() -> None:
    auditor, metrics = audited()
    auditor.emit("rate_limited", limiter="token", ip="192.0.2.1")
    auditor.emit("rate_limited", endpoint="registration", reason="window", ip="192.0.2.1")
    m = samples(metrics)
    assert value(m, "oauth_rate_limited_total", limiter="token") == 1
    assert value(m, "oauth_rate_limited_total", limiter="registration") == 1
    assert "192.0.2.1" not in metrics.render()


def test_registrations_are_counted_by_kind_type_and_result() -> None:
    auditor, metrics = audited()
    auditor.emit("registration", client_id="x1", public=True)
    auditor.emit("registration", client_id="x1", public=True, deduplicated=True)
    auditor.emit("registration", client_id="x2", public=False)
    m = samples(metrics)
    dynamic = {"client_kind": "dynamic"}
    assert value(m, "oauth_registrations_total", client_type="public", result="created") == 1
    assert value(m, "oauth_registrations_total", result="deduplicated", **dynamic) == 1
    assert value(m, "oauth_registrations_total", client_type="confidential", **dynamic) == 1


def test_token_issued_counts_by_grant_type() -> None:
    auditor, metrics = audited()
    auditor.emit("token.issued", client_id="cli", grant="code")
    auditor.emit("token.issued", client_id="cli", grant="token_exchange")
    m = samples(metrics)
    assert value(m, "oauth_tokens_issued_total", grant_type="authorization_code") == 1
    assert value(m, "oauth_tokens_issued_total", grant_type="token_exchange") == 1
    assert value(m, "oauth_codes_exchanged_total") == 1


def test_free_form_label_values_are_short_tokens_and_few() -> None:
    auditor, metrics = audited()
    auditor.emit("grant.revoked", reason="the IdP said no, for user alice@example.com")
    for i in range(100):
        auditor.emit("grant.revoked", reason=f"reason_{i}")
    m = samples(metrics)
    reasons = {
        dict(labels)["reason"] for (name, labels) in m if name == "oauth_grants_revoked_total"
    }
    assert "other" in reasons
    assert len(reasons) <= 33
    assert "alice" not in metrics.render()
    assert value(m, "oauth_grants_revoked_total") == 101


def test_a_failing_listener_never_breaks_the_audited_operation() -> None:
    auditor = Auditor()

    def broken(event: str, record: object) -> None:
        raise RuntimeError("metrics backend on fire")

    seen: list[str] = []
    auditor.add_listener(broken)
    auditor.add_listener(lambda event, record: seen.append(event))
    auditor.emit("token.issued", client_id="cli")
    assert seen == ["token.issued"]
    assert auditor.find("token.issued")


def test_listeners_never_see_a_dropped_credential_field() -> None:
    records: list[dict[str, object]] = []
    auditor = Auditor()
    auditor.add_listener(lambda event, record: records.append(dict(record)))
    auditor.emit("token.issued", client_id="cli", access_token="mcpat_SECRET")
    assert "access_token" not in records[0]
    assert "SECRET" not in str(records)


async def test_storage_failures_are_counted_by_result() -> None:
    class Flaky(MemoryStorage):
        async def ping(self) -> None:
            raise StorageUnavailable("down")

    metrics = Metrics(process_metrics=False)
    storage: Any = InstrumentedStorage(Flaky(), metrics, None)
    with pytest.raises(StorageUnavailable):
        await storage.ping()
    await storage.get_client("nobody")
    m = samples(metrics)
    assert value(m, "storage_operations_total", operation="ping", result="unavailable") == 1
    assert value(m, "storage_operations_total", operation="get_client", result="ok") == 1
    assert value(m, "storage_operation_duration_seconds_count", backend="memory") == 2


async def test_provider_failures_are_counted_by_error_kind() -> None:
    class Down:
        name = "oidc"

        async def refresh(self, tokens: object) -> object:
            await asyncio.sleep(0)
            raise UpstreamError("unavailable", "idp: token endpoint unreachable")

    metrics = Metrics(process_metrics=False)
    provider: Any = InstrumentedProvider(Down(), metrics, None)  # type: ignore[arg-type]
    with pytest.raises(UpstreamError):
        await provider.refresh(object())
    m = samples(metrics)
    labels = {"provider": "oidc", "operation": "refresh"}
    assert value(m, "provider_requests_total", result="unavailable", **labels) == 1
    assert value(m, "provider_errors_total", kind="unavailable", **labels) == 1


def test_two_apps_in_one_process_keep_separate_registries() -> None:
    first, second = Metrics(), Metrics()
    first.http_in_flight.inc()
    assert value(samples(first), "oauth_http_requests_in_flight") == 1
    assert value(samples(second), "oauth_http_requests_in_flight") == 0


async def test_a_failing_gauge_recount_keeps_the_old_values_and_is_counted() -> None:
    from mcp_oauthd.clock import FakeClock

    class Down(MemoryStorage):
        async def count_live_grants(self, now: float) -> int:
            raise StorageUnavailable("down")

    metrics = Metrics(process_metrics=False)
    metrics.bind_state(storage=Down(), clock=FakeClock(), static_clients=2)
    await metrics.refresh_gauges()
    m = samples(metrics)
    assert value(m, "oauth_gauge_refresh_failures_total") == 1
    assert value(m, "oauth_clients", kind="static") == 0  # never counted yet


class ListingsOnly:
    """A storage without ``CountsForGauges`` (as Redis and plugged-in backends may be)."""

    def __init__(self, inner: MemoryStorage) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        if name in ("count_live_grants", "count_clients_by_kind"):
            raise AttributeError(name)
        return getattr(self._inner, name)


async def _stored_state() -> MemoryStorage:
    storage = MemoryStorage()
    await create_full_grant(storage, make_grant(now=NOW))
    await create_full_grant(storage, make_grant(now=NOW, ttl=60))
    await storage.put_client(make_client(kind=ClientKind.DYNAMIC))
    await storage.put_client(make_client(kind=ClientKind.CIMD))
    return storage


async def test_the_gauges_are_counted_by_the_backend_without_listing_every_grant() -> None:
    from mcp_oauthd.clock import FakeClock

    class Counting(MemoryStorage):
        async def list_grants(
            self, subject: str | None = None, client_id: str | None = None
        ) -> Any:
            raise AssertionError("listed every grant to count them")

        async def list_clients(self) -> Any:
            raise AssertionError("listed every client to count them")

    storage = Counting()
    await create_full_grant(storage, make_grant(now=NOW))
    await create_full_grant(storage, make_grant(now=NOW, ttl=60))
    await storage.put_client(make_client(kind=ClientKind.DYNAMIC))
    metrics = Metrics(process_metrics=False)
    metrics.bind_state(storage=storage, clock=FakeClock(NOW + 61), static_clients=2)
    await metrics.refresh_gauges()
    m = samples(metrics)
    assert value(m, "oauth_active_grants") == 1
    assert value(m, "oauth_clients", kind="dynamic") == 1
    assert value(m, "oauth_clients", kind="cimd") == 0
    assert value(m, "oauth_clients", kind="static") == 2
    assert value(m, "oauth_gauge_refresh_failures_total") == 0


async def test_a_backend_without_counts_gets_the_same_gauges_from_its_listings() -> None:
    from mcp_oauthd.clock import FakeClock

    gauges = []
    for storage in (await _stored_state(), ListingsOnly(await _stored_state())):
        metrics = Metrics(process_metrics=False)
        metrics.bind_state(storage=storage, clock=FakeClock(NOW + 61), static_clients=2)  # type: ignore[arg-type]
        await metrics.refresh_gauges()
        m = samples(metrics)
        gauges.append(
            [value(m, "oauth_active_grants")]
            + [value(m, "oauth_clients", kind=kind) for kind in ("static", "dynamic", "cimd")]
        )
    assert gauges[0] == gauges[1] == [1, 2, 1, 1]

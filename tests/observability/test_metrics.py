"""/metrics: the counters a full login, refresh and revocation move, and by how much."""

from __future__ import annotations

from typing import Any

import aiohttp

from mcp_oauthd.observability.instrumented import unwrap
from mcp_oauthd.observability.metrics import METRICS
from mcp_oauthd.storage.memory import MemoryStorage
from tests.conftest import free_port
from tests.observability.conftest import Observed, parse_metrics, value

REDIRECT = "http://127.0.0.1:5555/callback"


async def refresh(observed: Observed, token: str) -> dict[str, Any]:
    status, body, _ = await observed.daemon.token(
        {"grant_type": "refresh_token", "refresh_token": token, "client_id": "cli"}
    )
    assert status == 200, body
    return dict(body)


async def revoke(observed: Observed, token: str) -> None:
    async with observed.daemon.http.post(
        observed.url + "/oauth/revoke", data={"token": token, "client_id": "cli"}
    ) as resp:
        assert resp.status == 200


async def test_a_login_refresh_and_revocation_move_each_flow_counter_once(
    observed: Observed,
) -> None:
    tokens = await observed.daemon.tokens()
    renewed = await refresh(observed, tokens["refresh_token"])
    await revoke(observed, renewed["refresh_token"])

    m = await observed.metrics()
    assert value(m, "oauth_authorizations_started_total") == 1
    assert value(m, "oauth_consent_decisions_total", decision="granted") == 1
    assert value(m, "oauth_logins_total", result="succeeded") == 1
    assert value(m, "oauth_logins_total") == 1
    assert value(m, "oauth_codes_exchanged_total") == 1
    assert value(m, "oauth_tokens_issued_total", grant_type="authorization_code") == 1
    assert value(m, "oauth_tokens_issued_total", grant_type="refresh_token") == 1
    assert value(m, "oauth_refreshes_total", result="rotated") == 1
    assert value(m, "oauth_revocations_total", token_kind="refresh") == 1
    assert value(m, "oauth_audit_events_total", event="token.issued") == 1
    for quiet in (
        "oauth_pkce_failures_total",
        "oauth_code_reuse_total",
        "oauth_refresh_reuse_total",
    ):
        assert value(m, quiet) == 0


async def test_http_requests_are_counted_and_timed_by_route_template_and_status(
    observed: Observed,
) -> None:
    tokens = await observed.daemon.tokens()
    await refresh(observed, tokens["refresh_token"])
    async with observed.daemon.http.get(observed.url + "/no/such/page-xyz") as resp:
        assert resp.status == 404
    async with observed.daemon.http.request("PROPFIND", observed.url + "/oauth/token") as resp:
        assert resp.status == 405

    m = await observed.metrics()
    token_route = {"route": "/oauth/token", "method": "POST", "status": "200"}
    assert value(m, "oauth_http_requests_total", **token_route) == 2
    assert value(m, "oauth_http_request_duration_seconds_count", **token_route) == 2
    assert value(m, "oauth_http_request_duration_seconds_bucket", le="+Inf", **token_route) == 2
    assert value(m, "oauth_http_requests_total", route="/oauth/authorize", status="200") == 1
    assert value(m, "oauth_http_requests_total", route="/oauth/callback", status="302") == 1
    assert value(m, "oauth_http_requests_total", route="unmatched", status="404") == 1
    assert value(m, "oauth_http_requests_total", method="other", status="405") == 1
    assert value(m, "oauth_http_requests_total", method="PROPFIND") == 0
    routes = {dict(labels).get("route") for (name, labels) in m if name.startswith("oauth_http")}
    assert not any("xyz" in str(route) for route in routes)


async def test_storage_and_provider_calls_are_counted_by_backend_and_operation(
    observed: Observed,
) -> None:
    tokens = await observed.daemon.tokens()
    await refresh(observed, tokens["refresh_token"])

    m = await observed.metrics()
    memory = {"backend": "memory", "result": "ok"}
    assert value(m, "storage_operations_total", operation="consume_code", **memory) == 1
    assert value(m, "storage_operations_total", operation="create_grant", **memory) == 1
    assert value(m, "storage_operations_total", operation="rotate_refresh_token", **memory) == 1
    assert value(m, "storage_operation_duration_seconds_count", operation="consume_code") == 1
    local = {"provider": "local", "result": "ok"}
    assert value(m, "provider_requests_total", operation="authorization_url", **local) == 1
    assert value(m, "provider_requests_total", operation="exchange", **local) == 1
    assert value(m, "provider_request_duration_seconds_count", operation="exchange") == 1
    assert value(m, "provider_errors_total") == 0


async def test_refused_and_replayed_credentials_show_in_the_security_counters(
    observed: Observed,
) -> None:
    daemon = observed.daemon
    hop, _ = await daemon.login(password="not the password")
    assert hop.status == 401
    code, verifier = await daemon.code()
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": "cli",
        "redirect_uri": REDIRECT,
    }
    status, _, _ = await daemon.token({**form, "code_verifier": "x" * 43})
    assert status == 400
    status, _, _ = await daemon.token({**form, "code_verifier": verifier})
    assert status == 400  # the code was spent on the failed attempt: a replay now
    tokens = await daemon.tokens()
    await refresh(observed, tokens["refresh_token"])
    daemon.clock.advance(daemon.config.tokens.refresh_grace_period + 1)
    status, _, _ = await daemon.token(
        {
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": "cli",
        }
    )
    assert status == 400

    m = await observed.metrics()
    assert value(m, "oauth_logins_total", result="failed") == 1
    assert value(m, "oauth_pkce_failures_total") == 1
    assert value(m, "oauth_code_reuse_total") == 1
    assert value(m, "oauth_refresh_reuse_total") == 1
    assert value(m, "oauth_http_requests_total", route="/oauth/token", status="400") == 3


async def test_no_label_names_a_client_or_a_user_by_default(observed: Observed) -> None:
    daemon = observed.daemon
    await daemon.tokens()
    await daemon.code(client_id="webapp", redirect_uri="https://app.example.com/cb")
    text = await observed.metrics_text()
    samples = parse_metrics(text)
    forbidden = {"cli", "webapp", "ide", "alice", "local:alice", "alice@example.com"}
    for name, labels in samples:
        assert "client_id" not in dict(labels), name
        assert not forbidden & {v for _, v in labels}, (name, labels)
    assert "alice" not in text


async def test_static_client_ids_become_labels_only_when_exposed(observed_factory: Any) -> None:
    observed: Observed = await observed_factory(
        observability={"metrics": {"expose_client_ids": True}}
    )
    await observed.daemon.tokens()
    m = await observed.metrics()
    assert value(m, "oauth_codes_exchanged_total", client_id="cli") == 1
    assert all(dict(labels).get("client_id") in (None, "cli") for (name, labels) in m), (
        "only the static client that logged in appears"
    )
    assert "alice" not in await observed.metrics_text()
    metrics = observed.app[METRICS]
    assert metrics.client_label("a-random-dynamic-id") == "_dynamic"
    assert metrics.client_label("https://app.example.com/client.json") == "_cimd"


async def test_the_grant_and_client_gauges_are_recounted_at_most_once_per_interval(
    observed: Observed,
) -> None:
    daemon = observed.daemon
    await daemon.tokens()
    m = await observed.metrics()
    assert value(m, "oauth_active_grants") == 1
    assert value(m, "oauth_clients", kind="static") == 3
    assert value(m, "oauth_clients", kind="dynamic") == 0
    assert value(m, "oauth_encryption_keys") == 1
    assert value(m, "oauth_signing_keys", purpose="cookie") == 1

    await daemon.tokens()
    m = await observed.metrics()
    assert value(m, "oauth_active_grants") == 1  # cached: no storage scan on this scrape

    daemon.clock.advance(daemon.config.observability.metrics.gauge_refresh_interval)
    m = await observed.metrics()
    assert value(m, "oauth_active_grants") == 2
    assert value(m, "oauth_gauges_refreshed_timestamp_seconds") == daemon.clock.now()


async def test_metrics_can_be_served_on_their_own_port_and_not_on_the_public_one(
    observed_factory: Any, http: aiohttp.ClientSession
) -> None:
    metrics_port = free_port()
    observed: Observed = await observed_factory(
        observability={"metrics": {"port": metrics_port, "host": "127.0.0.1"}}
    )
    async with http.get(observed.url + "/metrics") as resp:
        assert resp.status == 404
    await observed.daemon.tokens()
    samples = parse_metrics(await observed.metrics_text(f"http://127.0.0.1:{metrics_port}"))
    assert value(samples, "oauth_codes_exchanged_total") == 1


async def test_the_wrappers_keep_the_wrapped_class_visible_to_isinstance(
    observed: Observed,
) -> None:
    from mcp_oauthd.http import keys
    from mcp_oauthd.providers.local import LocalProvider

    services = observed.app[keys.SERVICES]
    assert services.storage is not observed.daemon.storage
    assert isinstance(services.storage, MemoryStorage)
    assert isinstance(services.provider, LocalProvider)
    assert unwrap(services.storage) is observed.daemon.storage
    assert services.storage.name == "memory"


async def test_jwt_signing_keys_are_counted_when_tokens_are_jwts(observed_factory: Any) -> None:
    observed: Observed = await observed_factory(tokens={"format": "jwt"})
    await observed.daemon.tokens()
    m = await observed.metrics()
    assert value(m, "oauth_signing_keys", purpose="jwt") >= 1
    assert value(m, "oauth_signing_keys", purpose="cookie") == 1

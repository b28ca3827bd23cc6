"""The hot lane: introspection and /auth/verify run the request pipeline without aiohttp's
router and middleware chain, and answer exactly as the normal way would."""

from __future__ import annotations

import io
import json
from typing import Any

import aiohttp
import pytest
from aiohttp.web_urldispatcher import UrlDispatcher
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mcp_oauthd.app import create_app
from mcp_oauthd.config.models import LoggingConfig
from mcp_oauthd.observability.logging import configure_logging
from mcp_oauthd.storage.base import AccessTokenRecord
from mcp_oauthd.storage.memory import MemoryStorage
from mcp_oauthd.testing.daemon import running
from tests.conftest import base_config, free_port
from tests.observability.conftest import parse_metrics, value
from tests.resource.conftest import FILES, SECRETS, RsDaemon, resources

pytestmark = pytest.mark.asyncio


@pytest.fixture
def resolved(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths aiohttp's router resolved (the normal way), in order."""
    paths: list[str] = []
    original = UrlDispatcher.resolve

    async def counting(self: UrlDispatcher, request: Any) -> Any:
        paths.append(request.path)
        return await original(self, request)

    monkeypatch.setattr(UrlDispatcher, "resolve", counting)
    return paths


async def test_introspection_and_verify_skip_the_router_and_other_paths_do_not(
    rs: RsDaemon, resolved: list[str]
) -> None:
    tokens = await rs.tokens(scope="files:read")
    resolved.clear()
    status, body, _ = await rs.introspect(tokens["access_token"])
    assert (status, body["active"]) == (200, True)
    status, _ = await rs.verify(tokens["access_token"])
    assert status == 200
    assert resolved == []
    async with rs.http.get(rs.url + "/.well-known/oauth-authorization-server") as resp:
        assert resp.status == 200
    assert resolved == ["/.well-known/oauth-authorization-server"]


async def _refresh(
    rs: RsDaemon, refresh_token: str, headers: dict[str, str] | None = None
) -> tuple[int, Any, Any]:
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": "cli"}
    async with rs.http.post(rs.url + "/oauth/token", data=form, headers=headers) as resp:
        return resp.status, await resp.json(), resp.headers


@pytest.mark.usefixtures("restore_logging")
async def test_the_token_endpoint_takes_the_lane_and_is_access_logged(
    rs: RsDaemon, resolved: list[str]
) -> None:
    tokens = await rs.tokens(scope="files:read")
    resolved.clear()
    stream = io.StringIO()
    configure_logging(LoggingConfig(format="json"), stream=stream)
    status, body, headers = await _refresh(rs, tokens["refresh_token"])
    assert status == 200 and body["refresh_token"] != tokens["refresh_token"]
    assert resolved == []
    assert headers["Cache-Control"] == "no-store" and "X-Request-ID" in headers
    # Unlike introspection, a token request is not a per-request check: it is logged.
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    access = [(line["path"], line["status"]) for line in lines if line["event"] == "request"]
    assert access == [("/oauth/token", 200)]


async def test_with_cors_the_token_endpoint_keeps_the_router_and_its_cors_headers(
    rs_factory: Any, resolved: list[str]
) -> None:
    origin = "http://localhost:6274"
    rs: RsDaemon = await rs_factory(cors={"allowed_origins": [origin]})
    tokens = await rs.tokens(scope="files:read")
    resolved.clear()
    status, _, headers = await _refresh(rs, tokens["refresh_token"], {"Origin": origin})
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == origin
    assert resolved == ["/oauth/token"]
    await rs.introspect(tokens["access_token"])  # never CORS: still on the lane
    assert resolved == ["/oauth/token"]


async def test_the_lane_answers_with_the_pipelines_headers(rs: RsDaemon) -> None:
    tokens = await rs.tokens(scope="files:read")
    _, _, headers = await rs.introspect(tokens["access_token"])
    for name in ("X-Content-Type-Options", "X-Frame-Options", "Cache-Control", "X-Request-ID"):
        assert name in headers
    async with rs.http.post(
        rs.url + "/oauth/introspect",
        data={"token": tokens["access_token"]},
        auth=aiohttp.BasicAuth("files-rs", SECRETS["files-rs"]),
        headers={"X-Request-ID": "trace-me-42"},
    ) as resp:
        assert resp.headers["X-Request-ID"] == "trace-me-42"


async def test_errors_on_the_lane_are_rendered_by_the_one_renderer(rs: RsDaemon) -> None:
    status, body, headers = await rs.introspect("whatever", rs=None)
    assert status == 401
    assert body["error"] == "invalid_client"
    assert headers["WWW-Authenticate"].startswith("Basic ")
    assert "X-Request-ID" in headers
    status, verify_headers = await rs.verify("not-a-token")
    assert status == 401
    assert 'error="invalid_token"' in verify_headers["WWW-Authenticate"]


async def test_a_request_expecting_100_continue_takes_the_normal_way(
    rs: RsDaemon, resolved: list[str]
) -> None:
    tokens = await rs.tokens(scope="files:read")
    resolved.clear()
    async with rs.http.post(
        rs.url + "/oauth/introspect",
        data={"token": tokens["access_token"]},
        auth=aiohttp.BasicAuth("files-rs", SECRETS["files-rs"]),
        expect100=True,
    ) as resp:
        assert resp.status == 200
        assert (await resp.json())["active"] is True
    assert resolved == ["/oauth/introspect"]


async def test_other_methods_on_the_hot_paths_take_the_normal_way(
    rs: RsDaemon, resolved: list[str]
) -> None:
    async with rs.http.get(rs.url + "/oauth/introspect") as resp:
        assert resp.status == 405
        assert (await resp.json())["error"] == "method_not_allowed"
    tokens = await rs.tokens(scope="files:read")
    async with rs.http.head(
        rs.url + "/auth/verify",
        headers={"Authorization": f"Bearer {tokens['access_token']}", "X-Auth-Resource": FILES},
    ) as resp:
        assert resp.status == 200
    assert "/oauth/introspect" in resolved and "/auth/verify" in resolved


async def test_requests_on_the_lane_are_counted_under_their_route(rs: RsDaemon) -> None:
    tokens = await rs.tokens(scope="files:read")
    for _ in range(3):
        await rs.introspect(tokens["access_token"])
    await rs.verify(tokens["access_token"])
    async with rs.http.get(rs.url + "/metrics") as resp:
        samples = parse_metrics(await resp.text())
    name = "oauth_http_requests_total"
    assert value(samples, name, route="/oauth/introspect", method="POST", status="200") == 3
    assert value(samples, name, route="/auth/verify", method="GET", status="200") == 1


async def test_a_rate_limited_hot_path_is_refused_and_audited_with_the_forwarded_address(
    rs_factory: Any,
) -> None:
    rs: RsDaemon = await rs_factory(
        rate_limits={"introspect": {"per_minute": 1, "burst": 1}},
        proxy={"trusted_hops": 1},
    )
    tokens = await rs.tokens(scope="files:read")
    statuses = []
    for _ in range(2):
        async with rs.http.get(
            rs.url + "/auth/verify",
            headers={
                "Authorization": f"Bearer {tokens['access_token']}",
                "X-Auth-Resource": FILES,
                "X-Forwarded-For": "203.0.113.9",
            },
        ) as resp:
            statuses.append(resp.status)
            retry_after = resp.headers.get("Retry-After")
    assert statuses == [200, 429]
    assert retry_after is not None and int(retry_after) >= 1
    [event] = rs.events("rate_limited")
    assert event["limiter"] == "introspect"
    assert event["ip"] == "203.0.113.9"


async def test_with_an_issuer_path_the_lane_serves_the_prefixed_paths(
    http: aiohttp.ClientSession, resolved: list[str]
) -> None:
    port = free_port()
    config = base_config(port, issuer=f"http://127.0.0.1:{port}/tenant1", resources=resources())
    async with running(create_app(config), port) as url:
        auth = aiohttp.BasicAuth("files-rs", SECRETS["files-rs"])
        async with http.post(
            url + "/tenant1/oauth/introspect", data={"token": "nothing"}, auth=auth
        ) as resp:
            assert resp.status == 200
            assert await resp.json() == {"active": False}
        async with http.post(url + "/oauth/introspect", data={"token": "x"}, auth=auth) as resp:
            assert resp.status == 404
    assert resolved == ["/oauth/introspect"]


async def test_with_tracing_on_hot_requests_take_the_normal_way_and_are_traced(
    http: aiohttp.ClientSession, resolved: list[str]
) -> None:
    exporter = InMemorySpanExporter()
    port = free_port()
    config = base_config(port, resources=resources())
    async with running(create_app(config, span_exporter=exporter), port) as url:
        auth = aiohttp.BasicAuth("files-rs", SECRETS["files-rs"])
        async with http.post(url + "/oauth/introspect", data={"token": "x"}, auth=auth) as resp:
            assert resp.status == 200
    assert resolved == ["/oauth/introspect"]
    names = [span.name for span in exporter.get_finished_spans()]
    assert "POST /oauth/introspect" in names
    assert "introspect" in names


class CountingStorage(MemoryStorage):
    def __init__(self) -> None:
        super().__init__()
        self.sync_lookups = 0
        self.async_lookups = 0

    def get_access_token_now(self, token_hash: str) -> AccessTokenRecord | None:
        self.sync_lookups += 1
        return super().get_access_token_now(token_hash)

    async def get_access_token(self, token_hash: str) -> AccessTokenRecord | None:
        self.async_lookups += 1  # (not through the counting synchronous one above)
        return MemoryStorage.get_access_token_now(self, token_hash)


async def test_the_lookup_is_synchronous_where_the_backend_offers_it_and_still_measured(
    rs_factory: Any,
) -> None:
    storage = CountingStorage()
    rs: RsDaemon = await rs_factory(storage=storage)
    tokens = await rs.tokens(scope="files:read")
    before = parse_metrics(await (await rs.http.get(rs.url + "/metrics")).text())
    status, body, _ = await rs.introspect(tokens["access_token"])
    assert (status, body["active"]) == (200, True)
    assert (await rs.verify(tokens["access_token"]))[0] == 200
    assert (storage.sync_lookups, storage.async_lookups) == (2, 0)
    after = parse_metrics(await (await rs.http.get(rs.url + "/metrics")).text())
    name, labels = "storage_operations_total", {"operation": "get_access_token", "result": "ok"}
    assert value(after, name, **labels) - value(before, name, **labels) == 2


async def test_with_tracing_on_the_lookup_is_the_async_one_with_its_span(
    http: aiohttp.ClientSession,
) -> None:
    exporter = InMemorySpanExporter()
    storage = CountingStorage()
    port = free_port()
    config = base_config(port, resources=resources())
    app = create_app(config, storage=storage, span_exporter=exporter)
    async with running(app, port) as url:
        auth = aiohttp.BasicAuth("files-rs", SECRETS["files-rs"])
        token = "mcpat_" + "A" * 43
        async with http.post(url + "/oauth/introspect", data={"token": token}, auth=auth) as resp:
            assert await resp.json() == {"active": False}
    assert (storage.sync_lookups, storage.async_lookups) == (0, 1)
    assert "storage.get_access_token" in [s.name for s in exporter.get_finished_spans()]

"""Discovery at every URL of the MCP discovery order (RFC 8414, OIDC Discovery, RFC 9728)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.flows.conftest import Daemon

REQUIRED = {
    "authorization_endpoint",
    "token_endpoint",
    "response_types_supported",
    "code_challenge_methods_supported",
}


async def get_json(daemon: Daemon, path: str) -> tuple[int, Any, str]:
    async with daemon.http.get(daemon.url + path) as resp:
        return resp.status, await resp.json(content_type=None), resp.content_type


@pytest.mark.parametrize(
    "path", ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"]
)
async def test_metadata_is_served_with_the_exact_issuer(daemon: Daemon, path: str) -> None:
    status, body, content_type = await get_json(daemon, path)
    assert status == 200
    assert content_type == "application/json"
    assert body["issuer"] == daemon.config.issuer
    assert set(body) >= REQUIRED
    assert body["response_types_supported"] == ["code"]
    assert body["code_challenge_methods_supported"] == ["S256"]
    assert body["authorization_response_iss_parameter_supported"] is True
    assert body["token_endpoint"] == daemon.config.issuer + "/oauth/token"
    assert "none" in body["token_endpoint_auth_methods_supported"]


async def test_an_issuer_with_a_path_is_served_at_every_variant(daemon_factory: Any) -> None:
    daemon: Daemon = await daemon_factory()
    issuer = daemon.url + "/tenant1"
    from mcp_oauthd.app import create_app
    from mcp_oauthd.testing.daemon import running
    from tests.conftest import base_config, free_port

    port = free_port()
    config = base_config(port, issuer=f"http://127.0.0.1:{port}/tenant1")
    issuer = config.issuer
    async with running(create_app(config), port) as url:
        for path in (
            "/.well-known/oauth-authorization-server/tenant1",
            "/.well-known/openid-configuration/tenant1",
            "/tenant1/.well-known/openid-configuration",
        ):
            async with daemon.http.get(url + path) as resp:
                assert resp.status == 200, path
                body = await resp.json()
            assert body["issuer"] == issuer
            assert body["authorization_endpoint"] == issuer + "/oauth/authorize"
            assert body["code_challenge_methods_supported"] == ["S256"]
        async with daemon.http.get(url + "/tenant1/oauth/authorize") as resp:
            assert resp.status == 400  # the endpoint lives under the issuer path


async def test_protected_resource_metadata_is_served_for_each_resource(daemon: Daemon) -> None:
    status, body, _ = await get_json(daemon, "/.well-known/oauth-protected-resource/mcp")
    assert status == 200
    assert body["resource"] in {r.uri for r in daemon.config.resources}
    assert body["authorization_servers"] == [daemon.config.issuer]
    status, root, _ = await get_json(daemon, "/.well-known/oauth-protected-resource")
    assert status == 200
    assert root["resource"] == daemon.config.default_resource.uri
    assert root["scopes_supported"] == ["files:read", "files:write"]


async def test_an_unknown_protected_resource_path_is_a_json_404(daemon: Daemon) -> None:
    status, body, _ = await get_json(daemon, "/.well-known/oauth-protected-resource/nope")
    assert status == 404
    assert body["error"] == "not_found"


async def test_unknown_api_routes_get_json_404_and_405(daemon: Daemon) -> None:
    status, body, _ = await get_json(daemon, "/oauth/nothing")
    assert (status, body["error"]) == (404, "not_found")
    status, body, _ = await get_json(daemon, "/oauth/token")
    assert (status, body["error"]) == (405, "method_not_allowed")


async def test_health_and_readiness(daemon: Daemon) -> None:
    assert (await get_json(daemon, "/healthz"))[0] == 200
    status, body, _ = await get_json(daemon, "/readyz")
    assert (status, body["status"]) == (200, "ready")


async def test_every_response_carries_the_security_headers(daemon: Daemon) -> None:
    async with daemon.http.get(daemon.url + "/.well-known/oauth-authorization-server") as resp:
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Referrer-Policy"] == "no-referrer"
        assert resp.headers["X-Request-ID"]


async def test_a_well_formed_request_id_is_kept(daemon: Daemon) -> None:
    async with daemon.http.get(daemon.url + "/healthz", headers={"X-Request-ID": "abc-123"}) as r:
        assert r.headers["X-Request-ID"] == "abc-123"
    async with daemon.http.get(daemon.url + "/healthz", headers={"X-Request-ID": "bad id!"}) as r:
        assert r.headers["X-Request-ID"] != "bad id!"


async def test_a_malformed_token_request_gets_an_rfc6749_error(daemon: Daemon) -> None:
    async with daemon.http.post(
        daemon.url + "/oauth/token", data=b"{}", headers={"Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"] == "invalid_request"
    status, body, _ = await daemon.token({"grant_type": "password", "client_id": "cli"})
    assert (status, body["error"]) == (400, "unsupported_grant_type")
    status, body, _ = await daemon.token({"client_id": "cli"})
    assert (status, body["error"]) == (400, "invalid_request")

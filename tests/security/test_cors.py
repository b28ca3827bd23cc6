"""CORS for browser-based MCP clients (MCP Inspector): only the JSON endpoints a browser
client calls, only for configured origins, never with credentials, never on the pages a
user types a password into or approves access on."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from mcp_oauthd.config.loader import check_warnings
from mcp_oauthd.http.cors import setup_cors
from tests.conftest import base_config
from tests.daemon import Daemon
from tests.resource.conftest import local_provider

INSPECTOR = "http://localhost:6274"
EVIL = "https://evil.example"


@pytest.fixture
async def cors_daemon(daemon_factory: Any) -> Daemon:
    daemon: Daemon = await daemon_factory(
        cors={"allowed_origins": [INSPECTOR]}, provider=local_provider()
    )
    return daemon


async def preflight(daemon: Daemon, path: str, origin: str, method: str, headers: str = "") -> Any:
    request_headers = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        request_headers["Access-Control-Request-Headers"] = headers
    async with daemon.http.options(daemon.url + path, headers=request_headers) as resp:
        return resp.status, resp.headers


async def test_a_browser_client_can_preflight_and_redeem_a_code_at_the_token_endpoint(
    cors_daemon: Daemon,
) -> None:
    """What MCP Inspector does: preflight, then a cross-origin token request it can read."""
    status, headers = await preflight(
        cors_daemon, "/oauth/token", INSPECTOR, "POST", "content-type, mcp-protocol-version"
    )
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == INSPECTOR
    assert headers["Access-Control-Allow-Methods"] == "POST"
    assert "CONTENT-TYPE" in headers["Access-Control-Allow-Headers"].upper()
    assert headers["Access-Control-Max-Age"] == "600"
    assert "Access-Control-Allow-Credentials" not in headers

    code, verifier = await cors_daemon.code()
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": verifier,
        "client_id": "cli",
        "redirect_uri": "http://127.0.0.1:5555/callback",
    }
    async with cors_daemon.http.post(
        cors_daemon.url + "/oauth/token", data=form, headers={"Origin": INSPECTOR}
    ) as resp:
        assert resp.status == 200
        assert (await resp.json())["access_token"].startswith("mcpat_")
        assert resp.headers["Access-Control-Allow-Origin"] == INSPECTOR
        assert "Access-Control-Allow-Credentials" not in resp.headers
        assert "Origin" in resp.headers["Vary"]


async def test_an_error_from_the_token_endpoint_is_readable_by_the_allowed_origin(
    cors_daemon: Daemon,
) -> None:
    async with cors_daemon.http.post(
        cors_daemon.url + "/oauth/token",
        data={"grant_type": "refresh_token"},
        headers={"Origin": INSPECTOR},
    ) as resp:
        assert resp.status == 401
        assert resp.headers["Access-Control-Allow-Origin"] == INSPECTOR
        exposed = resp.headers["Access-Control-Expose-Headers"]
        assert "WWW-Authenticate" in exposed
        assert "Retry-After" in exposed


@pytest.mark.parametrize(
    ("path", "method", "headers"),
    [
        ("/.well-known/oauth-authorization-server", "GET", "mcp-protocol-version"),
        ("/.well-known/openid-configuration", "GET", ""),
        ("/.well-known/oauth-protected-resource/mcp", "GET", "mcp-protocol-version"),
        ("/oauth/register", "POST", "content-type"),
        ("/oauth/register/some-client", "DELETE", "authorization"),
        ("/oauth/revoke", "POST", "content-type"),
        ("/oauth/jwks", "GET", ""),
    ],
)
async def test_the_json_endpoints_a_browser_client_calls_answer_a_preflight(
    cors_daemon: Daemon, path: str, method: str, headers: str
) -> None:
    status, got = await preflight(cors_daemon, path, INSPECTOR, method, headers)
    assert status == 200
    assert got["Access-Control-Allow-Origin"] == INSPECTOR


async def test_discovery_carries_the_allowed_origin_and_varies_on_it(cors_daemon: Daemon) -> None:
    url = cors_daemon.url + "/.well-known/oauth-authorization-server"
    async with cors_daemon.http.get(url, headers={"Origin": INSPECTOR}) as resp:
        assert resp.headers["Access-Control-Allow-Origin"] == INSPECTOR
        assert "Origin" in resp.headers["Vary"]
    async with cors_daemon.http.get(url) as resp:
        # Same URL, no Origin: still Vary, so a shared cache never mixes the two answers.
        assert "Access-Control-Allow-Origin" not in resp.headers
        assert "Origin" in resp.headers["Vary"]


async def test_an_origin_that_is_not_configured_gets_no_cors(cors_daemon: Daemon) -> None:
    status, headers = await preflight(cors_daemon, "/oauth/token", EVIL, "POST", "content-type")
    assert status == 403
    assert "Access-Control-Allow-Origin" not in headers
    async with cors_daemon.http.post(
        cors_daemon.url + "/oauth/token", data={"grant_type": "x"}, headers={"Origin": EVIL}
    ) as resp:
        assert "Access-Control-Allow-Origin" not in resp.headers


async def test_a_preflight_for_a_method_the_endpoint_does_not_have_is_refused(
    cors_daemon: Daemon,
) -> None:
    status, headers = await preflight(cors_daemon, "/oauth/token", INSPECTOR, "DELETE")
    assert status == 403
    assert "Access-Control-Allow-Origin" not in headers


@pytest.mark.parametrize(
    "path",
    [
        "/oauth/authorize",
        "/oauth/consent",
        "/oauth/callback",
        "/login",
        "/oauth/introspect",
        "/auth/verify",
    ],
)
async def test_pages_and_server_to_server_endpoints_never_get_cors(
    cors_daemon: Daemon, path: str
) -> None:
    """The login, consent, authorize and callback pages must not be readable or drivable
    by another origin's script; introspection and verify are server to server."""
    status, headers = await preflight(cors_daemon, path, INSPECTOR, "POST", "content-type")
    assert status != 200
    assert "Access-Control-Allow-Origin" not in headers
    async with cors_daemon.http.get(cors_daemon.url + path, headers={"Origin": INSPECTOR}) as r:
        assert "Access-Control-Allow-Origin" not in r.headers


async def test_without_configured_origins_there_is_no_cors_at_all(daemon: Daemon) -> None:
    status, headers = await preflight(daemon, "/oauth/token", INSPECTOR, "POST")
    assert status == 405
    assert "Access-Control-Allow-Origin" not in headers
    url = daemon.url + "/.well-known/oauth-authorization-server"
    async with daemon.http.get(url, headers={"Origin": INSPECTOR}) as resp:
        assert "Access-Control-Allow-Origin" not in resp.headers


def test_a_wildcard_origin_needs_explicit_confirmation_and_is_warned_about() -> None:
    with pytest.raises(ValueError, match="allow_wildcard"):
        base_config(8080, cors={"allowed_origins": ["*"]})
    config = base_config(8080, cors={"allowed_origins": ["*"], "allow_wildcard": True})
    warnings = [w for w in check_warnings(config) if w.field == "cors.allowed_origins"]
    assert len(warnings) == 1
    assert "any origin" in warnings[0].risk


@pytest.mark.parametrize(
    "origin", ["http://localhost:6274/", "localhost:6274", "http://x/path", "ftp://x"]
)
def test_an_origin_with_a_path_or_without_a_scheme_is_a_config_error(origin: str) -> None:
    with pytest.raises(ValueError, match="not an origin"):
        base_config(8080, cors={"allowed_origins": [origin]})


async def test_a_wildcard_lets_any_origin_read_the_token_endpoint(daemon_factory: Any) -> None:
    daemon: Daemon = await daemon_factory(cors={"allowed_origins": ["*"], "allow_wildcard": True})
    status, headers = await preflight(daemon, "/oauth/token", EVIL, "POST", "content-type")
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == EVIL
    assert "Access-Control-Allow-Credentials" not in headers
    # Still never the pages.
    status, headers = await preflight(daemon, "/oauth/consent", EVIL, "POST")
    assert "Access-Control-Allow-Origin" not in headers


def test_routes_are_picked_by_path_so_endpoints_added_later_are_covered() -> None:
    async def handler(_: web.Request) -> web.Response:
        return web.Response()

    config = base_config(8080, cors={"allowed_origins": [INSPECTOR]})
    app = web.Application()
    app.router.add_post("/oauth/token", handler)
    app.router.add_get("/.well-known/something-new", handler)
    app.router.add_post("/oauth/register/{client_id}/rotate", handler)
    app.router.add_get("/oauth/consent", handler)
    app.router.add_get("/oauth/tokenish", handler)  # a prefix of a word is not a match
    covered = setup_cors(app, config)
    assert covered == {
        "/oauth/token",
        "/.well-known/something-new",
        "/oauth/register/{client_id}/rotate",
    }


def test_an_issuer_path_moves_the_covered_endpoints_under_it() -> None:
    async def handler(_: web.Request) -> web.Response:
        return web.Response()

    config = base_config(8080, cors={"allowed_origins": [INSPECTOR]})
    config = config.model_copy(update={"issuer": "http://127.0.0.1:8080/auth"})
    app = web.Application()
    for path in ("/auth/oauth/token", "/oauth/token", "/auth/.well-known/openid-configuration"):
        app.router.add_post(path, handler)
    assert setup_cors(app, config) == {
        "/auth/oauth/token",
        "/auth/.well-known/openid-configuration",
    }

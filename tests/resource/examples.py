"""Load and run the example MCP servers (examples/) and the nginx config (deploy/nginx)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import re
import shutil
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

ROOT = Path(__file__).resolve().parents[2]
PYTHON_EXAMPLE = ROOT / "examples" / "python-mcp-server" / "server.py"
TS_EXAMPLE = ROOT / "examples" / "typescript-mcp-server"
NGINX_CONF = ROOT / "deploy" / "nginx" / "nginx.conf"


def load_python_example() -> ModuleType:
    """examples/python-mcp-server/server.py as a module (it is a script, not a package)."""
    name = "python_mcp_server_example"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, PYTHON_EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def _replace(text: str, old: str, new: str, count: int) -> str:
    assert text.count(old) == count, f"deploy/nginx/nginx.conf no longer has {old!r}"
    return text.replace(old, new)


def nginx_config(tmp: Path, *, port: int, daemon_port: int, mcp_port: int) -> Path:
    """deploy/nginx/nginx.conf with loopback listeners instead of TLS ones: the auth server
    as ``localhost``, the MCP server as ``127.0.0.1``, both on ``port``."""
    text = NGINX_CONF.read_text()
    text = _replace(text, "listen 443 ssl http2;", f"listen 127.0.0.1:{port};", 2)
    text, n = re.subn(r"^\s*ssl_certificate(_key)? .*\n", "", text, flags=re.MULTILINE)
    assert n == 4
    text = _replace(text, "server_name auth.example.com;", "server_name localhost;", 1)
    text = _replace(text, "server_name files.example.com;", "server_name 127.0.0.1;", 1)
    text = _replace(
        text,
        'set $mcp_resource "https://files.example.com/mcp";',
        f'set $mcp_resource "http://127.0.0.1:{port}/mcp";',
        1,
    )
    text = _replace(text, "server 127.0.0.1:8080;", f"server 127.0.0.1:{daemon_port};", 1)
    text = _replace(text, "server 127.0.0.1:8000;", f"server 127.0.0.1:{mcp_port};", 1)
    writable = "".join(
        f"    {kind}_temp_path {tmp / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text = _replace(text, "http {\n", f"http {{\n{writable}    access_log {tmp}/access.log;\n", 1)
    path = tmp / "nginx.conf"
    path.write_text(text)
    return path


async def _wait_for_port(port: int, process: asyncio.subprocess.Process) -> None:
    for _ in range(500):
        if process.returncode is not None:
            raise AssertionError(f"nginx exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.1):
            return
        await asyncio.sleep(0.01)  # waiting for a socket to be bound, not for time to pass
    raise AssertionError("nginx did not start listening")


@contextlib.asynccontextmanager
async def running_nginx(conf: Path, port: int) -> AsyncIterator[Path]:
    binary = nginx_binary()
    assert binary is not None
    tmp = conf.parent
    directives = (
        f"daemon off; master_process on; pid {tmp}/nginx.pid; error_log {tmp}/error.log warn;"
    )
    if os.geteuid() == 0:
        directives += " user root;"  # workers must write the temp dirs under tmp
    process = await asyncio.create_subprocess_exec(
        binary,
        "-p",
        str(tmp),
        "-c",
        str(conf),
        "-g",
        directives,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await _wait_for_port(port, process)
        yield tmp
    finally:
        if process.returncode is None:
            process.terminate()
        _, stderr = await process.communicate()
        if process.returncode not in (0, -15):
            raise AssertionError(f"nginx failed: {stderr.decode(errors='replace')}")


async def call_whoami(resource: str, http_client: httpx2.AsyncClient) -> dict[str, Any]:
    async with streamable_http_client(resource, http_client=http_client) as streams:
        async with ClientSession(streams[0], streams[1]) as session:
            await session.initialize()
            result: Any = await session.call_tool("whoami", {})
            assert not result.is_error, result
            structured: dict[str, Any] = result.structured_content
            return structured.get("result", structured)


# ---------------------------------------------------------------------------- the contract
# What every example MCP server must do with tokens it should refuse, whatever its language.
def challenge(value: str) -> dict[str, str]:
    assert value.startswith("Bearer "), value
    return dict(re.findall(r'(\w+)="([^"]*)"', value))


async def assert_foreign_token_refused(
    http: Any, issuer: str, resource: str, mail: str, extra: dict[str, str], body: Any
) -> None:
    """A token minted for another resource: 401 invalid_token, with a challenge whose
    resource_metadata leads back to this server and its authorization server."""
    from mcp_oauthd.testing import flow
    from tests.conftest import DEMO_PASSWORD

    token = await flow.tokens(
        http, issuer, username="alice", password=DEMO_PASSWORD, resource=mail, scope="mail"
    )
    headers = {"Authorization": f"Bearer {token['access_token']}", **extra}
    async with http.post(resource, json=body, headers=headers) as resp:
        assert resp.status == 401
        found = challenge(resp.headers["WWW-Authenticate"])
    assert found["error"] == "invalid_token"
    assert found["scope"] == "files:read"
    async with http.get(found["resource_metadata"]) as resp:
        meta = await resp.json()
    assert (meta["resource"], meta["authorization_servers"]) == (resource, [issuer])


async def assert_missing_scope_refused(http: Any, issuer: str, resource: str) -> None:
    """A token without the server's required scope: 403 insufficient_scope."""
    from mcp_oauthd.testing import flow
    from tests.conftest import DEMO_PASSWORD

    writer = await flow.tokens(
        http, issuer, username="alice", password=DEMO_PASSWORD, scope="files:write"
    )
    headers = {"Authorization": f"Bearer {writer['access_token']}"}
    async with http.post(resource, json={}, headers=headers) as resp:
        assert resp.status == 403
        assert challenge(resp.headers["WWW-Authenticate"])["error"] == "insufficient_scope"


async def sdk_login_and_whoami(http: Any, resource: str, redirect: str) -> tuple[Any, Any]:
    """The official SDK client (pre-registered as ``cli``) discovers the server, lets alice
    log in and calls ``whoami``; returns the identity and the SDK's OAuth provider."""
    from mcp.client.auth.oauth2 import OAuthClientProvider
    from mcp.shared.auth import OAuthClientInformationFull

    from tests.conftest import DEMO_PASSWORD
    from tests.mcp_sdk.support import BrowserUser, MemoryTokenStorage, client_metadata

    store = MemoryTokenStorage(
        client_info=OAuthClientInformationFull(
            client_id="cli",
            redirect_uris=[redirect],  # type: ignore[list-item]
            token_endpoint_auth_method="none",
        )
    )
    user = BrowserUser(http, "alice", DEMO_PASSWORD, redirect)
    provider = OAuthClientProvider(
        server_url=resource,
        client_metadata=client_metadata(redirect),
        storage=store,
        redirect_handler=user.open,
        callback_handler=user.callback,
    )
    async with httpx2.AsyncClient(auth=provider, timeout=30) as client:
        identity = await call_whoami(resource, client)
    return identity, provider

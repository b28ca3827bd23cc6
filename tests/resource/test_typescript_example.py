"""examples/typescript-mcp-server (official TypeScript SDK from npm) under node: it accepts
a token for its own resource, refuses one minted for another MCP server, and the Python
SDK client discovers and logs in against it."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx2
import pytest

from mcp_oauthd.app import create_app
from mcp_oauthd.clock import SystemClock
from mcp_oauthd.storage.memory import MemoryStorage
from mcp_oauthd.testing import flow
from mcp_oauthd.testing.daemon import running
from tests.conftest import DEMO_PASSWORD, base_config, free_port
from tests.resource.conftest import MAIL, SECRETS, clients, local_provider
from tests.resource.examples import (
    TS_EXAMPLE,
    assert_foreign_token_refused,
    assert_missing_scope_refused,
    call_whoami,
    sdk_login_and_whoami,
)

NODE = shutil.which("node")
NPM = shutil.which("npm")
REDIRECT = "http://127.0.0.1:5596/callback"

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.skipif(
        NODE is None, reason="node is not installed: the TypeScript example needs it"
    ),
    pytest.mark.skipif(NPM is None, reason="npm is not installed: it installs the TypeScript SDK"),
]


def _newer(target: Path, *sources: Path) -> bool:
    return target.exists() and all(target.stat().st_mtime >= s.stat().st_mtime for s in sources)


@pytest.fixture(scope="session")
def ts_server_js() -> Path:
    """Install the locked dependencies (npm ci) once, and compile when the source changed."""
    assert NPM is not None
    lock = TS_EXAMPLE / "package-lock.json"
    modules = TS_EXAMPLE / "node_modules"
    if not _newer(modules / ".package-lock.json", lock):
        subprocess.run(
            [NPM, "ci", "--no-audit", "--no-fund"], cwd=TS_EXAMPLE, check=True, timeout=600
        )
    built = TS_EXAMPLE / "dist" / "server.js"
    if not _newer(built, TS_EXAMPLE / "src" / "server.ts", TS_EXAMPLE / "tsconfig.json", lock):
        subprocess.run([NPM, "run", "build"], cwd=TS_EXAMPLE, check=True, timeout=300)
    return built


@dataclass
class Setup:
    issuer: str
    resource: str


@pytest.fixture
async def setup(ts_server_js: Path) -> AsyncIterator[Setup]:
    assert NODE is not None
    daemon_port, mcp_port = free_port(), free_port()
    resource = f"http://127.0.0.1:{mcp_port}/mcp"
    config = base_config(
        daemon_port,
        provider=local_provider(),
        clients=clients(),
        resources=[
            {
                "uri": resource,
                "scopes": ["files:read", "files:write"],
                "default_scopes": ["files:read"],
                "default": True,
                "introspection_client_id": "files-rs",
                "introspection_client_secret": SECRETS["files-rs"],
            },
            {"uri": MAIL, "scopes": ["mail"]},
        ],
    )
    env = {
        **os.environ,
        "MCP_RESOURCE": resource,
        "OAUTHD_ISSUER": config.issuer,
        "MCP_CLIENT_ID": "files-rs",
        "MCP_CLIENT_SECRET": SECRETS["files-rs"],
        "MCP_REQUIRED_SCOPES": "files:read",
        "PORT": str(mcp_port),
    }
    app = create_app(config, storage=MemoryStorage(), clock=SystemClock())
    async with running(app, daemon_port):
        node = await asyncio.create_subprocess_exec(
            NODE, str(ts_server_js), env=env, stdout=asyncio.subprocess.PIPE
        )
        try:
            assert node.stdout is not None
            line = await asyncio.wait_for(node.stdout.readline(), timeout=30)
            assert b"listening on" in line, line
            yield Setup(config.issuer, resource)
        finally:
            node.terminate()
            await node.wait()


async def test_a_token_for_its_own_resource_is_accepted(
    setup: Setup, http: aiohttp.ClientSession
) -> None:
    tokens = await flow.tokens(http, setup.issuer, username="alice", password=DEMO_PASSWORD)
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as client:
        identity = await call_whoami(setup.resource, client)
    assert identity == {
        "subject": "local:alice",
        "email": "alice@example.com",
        "client_id": "cli",
        "scopes": "files:read",
    }


async def test_a_token_for_another_resource_is_refused_with_401(
    setup: Setup, http: aiohttp.ClientSession
) -> None:
    await assert_foreign_token_refused(
        http,
        setup.issuer,
        setup.resource,
        MAIL,
        {"Accept": "application/json, text/event-stream"},
        {"jsonrpc": "2.0"},
    )


async def test_a_token_without_the_required_scope_is_refused_with_403(
    setup: Setup, http: aiohttp.ClientSession
) -> None:
    await assert_missing_scope_refused(http, setup.issuer, setup.resource)


async def test_the_python_sdk_client_discovers_and_logs_in_against_it(
    setup: Setup, http: aiohttp.ClientSession
) -> None:
    identity, _ = await sdk_login_and_whoami(http, setup.resource, REDIRECT)
    assert identity["subject"] == "local:alice"

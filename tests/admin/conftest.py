"""A real daemon on sqlite or Redis storage, and the operator CLI run against the same
storage while it serves (the CLI runs in a thread: it has its own event loop, as it would
in its own process)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from mcp_oauthd.app import create_app
from mcp_oauthd.cli import main
from mcp_oauthd.clock import FakeClock
from mcp_oauthd.config.loader import load_config
from mcp_oauthd.security.audit import Auditor
from mcp_oauthd.testing import flow
from mcp_oauthd.testing.daemon import running
from tests.conftest import DEMO_HASH, DEMO_PASSWORD, free_port

# Two encryption keys (32 bytes each, base64url): the first encrypts, both decrypt.
KEY_NEW = "bmV3LWtleS1uZXcta2V5LW5ldy1rZXktbmV3LWtleSE"
KEY_OLD = "b2xkLWtleS1vbGQta2V5LW9sZC1rZXktb2xkLWtleSE"
COOKIE_SECRET = "cookie-secret-cookie-secret-cookie-secret"
WEBAPP_SECRET = "s3cret-s3cret-s3cret"


def config_data(port: int, storage: dict[str, Any], **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "issuer": f"http://127.0.0.1:{port}",
        "server": {"host": "127.0.0.1", "port": port},
        "storage": storage,
        "provider": {
            "type": "local",
            "users": [
                {"username": "alice", "password_hash": DEMO_HASH, "email": "Alice@Example.com"},
                {"username": "mallory", "password_hash": DEMO_HASH, "email": "m@evil.example"},
            ],
        },
        "resources": [{"uri": "http://127.0.0.1:9999/mcp", "scopes": ["files:read"]}],
        "clients": [
            {
                "client_id": "cli",
                "client_name": "Test CLI",
                "redirect_uris": [flow.DEFAULT_REDIRECT],
            },
            {
                "client_id": "webapp",
                "client_name": "Web App",
                "client_secret": WEBAPP_SECRET,
                "redirect_uris": ["https://app.example.com/cb"],
            },
        ],
        "security": {
            "encryption_keys": [{"id": "k2", "key": KEY_NEW}, {"id": "k1", "key": KEY_OLD}],
            "cookie_secret": COOKIE_SECRET,
        },
        "rate_limits": {"enabled": False},
        "observability": {"metrics": {"enabled": False}},
    }
    data.update(extra)
    return data


@dataclass
class LiveDaemon:
    url: str
    config_path: Path
    clock: FakeClock
    auditor: Auditor
    http: aiohttp.ClientSession

    async def tokens(self, username: str = "alice", **params: str) -> dict[str, Any]:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            return await flow.tokens(
                browser, self.url, username=username, password=DEMO_PASSWORD, **params
            )

    async def refresh(self, refresh_token: str, client_id: str = "cli") -> tuple[int, Any]:
        status, body, _ = await flow.token_request(
            self.http,
            self.url,
            {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client_id},
        )
        return status, body

    async def register(self, **metadata: Any) -> dict[str, Any]:
        body = {
            "client_name": "Registered Tool",
            "redirect_uris": ["http://127.0.0.1:7777/cb"],
            "token_endpoint_auth_method": "none",
            **metadata,
        }
        async with self.http.post(self.url + "/oauth/register", json=body) as resp:
            assert resp.status == 201, await resp.text()
            return dict(await resp.json())


@pytest.fixture
async def start_daemon(
    tmp_path: Path, http: aiohttp.ClientSession
) -> AsyncIterator[Callable[..., Any]]:
    """``await start_daemon(storage)``: write the config file, serve it with a fake clock."""
    async with AsyncExitStack() as stack:

        async def start(storage: dict[str, Any], **extra: Any) -> LiveDaemon:
            port = free_port()
            path = tmp_path / "config.yaml"
            path.write_text(yaml.safe_dump(config_data(port, storage, **extra)), encoding="utf-8")
            clock, auditor = FakeClock(), Auditor()
            app = create_app(load_config(path), clock=clock, auditor=auditor)
            url = await stack.enter_async_context(running(app, port))
            return LiveDaemon(url, path, clock, auditor, http)

        yield start


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        assert self.out, f"exit {self.code}, nothing on stdout; stderr: {self.err!r}"
        return json.loads(self.out)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """``await cli(daemon, "grants", "list", ...)``: run the operator CLI on the daemon's
    config in a thread (its own event loop) and capture what it prints.

    In-process, the CLI must not reroute this test process's logging (to a capture stream
    that closes after the test); ``cli_process`` runs the real thing, logging included."""
    monkeypatch.setattr("mcp_oauthd.cli._configure_admin_logging", lambda config: None)

    async def run(daemon: LiveDaemon, *argv: str) -> CliResult:
        capsys.readouterr()
        args = [*argv, "--config", str(daemon.config_path)]
        code = await asyncio.to_thread(main, args)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


async def cli_process(daemon: LiveDaemon, *argv: str) -> CliResult:
    """The operator CLI as its own process, as an operator runs it."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mcp_oauthd",
        *argv,
        "--config",
        str(daemon.config_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return CliResult(proc.returncode, out.decode(), err.decode())

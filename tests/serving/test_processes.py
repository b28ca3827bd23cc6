"""The daemon as a real process: worker processes on one port sharing one SQLite file,
and a graceful drain on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from mcp_oauthd.testing import flow
from tests.conftest import DEMO_HASH, DEMO_PASSWORD, free_port


def write_config(tmp_path: Path, port: int, **extra: Any) -> Path:
    config: dict[str, Any] = {
        "issuer": f"http://127.0.0.1:{port}",
        "server": {"host": "127.0.0.1", "port": port, "shutdown_timeout": 10},
        "storage": {"type": "sqlite", "path": str(tmp_path / "state.db")},
        "provider": {
            "type": "local",
            "users": [{"username": "alice", "password_hash": DEMO_HASH}],
        },
        "resources": [{"uri": "http://127.0.0.1:9999/mcp", "scopes": ["files:read"]}],
        "clients": [{"client_id": "cli", "redirect_uris": ["http://127.0.0.1/callback"]}],
        "logging": {"format": "json"},
    }
    config.update(extra)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class Process:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[dict[str, Any]] = []

    async def wait_for(self, event: str, count: int = 1) -> list[dict[str, Any]]:
        assert self.proc.stderr is not None
        while sum(1 for line in self.lines if line.get("event") == event) < count:
            raw = await asyncio.wait_for(self.proc.stderr.readline(), 60)
            if not raw:
                raise AssertionError(f"process ended before {event!r}: {self.lines[-5:]}")
            try:
                self.lines.append(json.loads(raw))
            except ValueError:
                self.lines.append({"raw": raw.decode(errors="replace")})
        return [line for line in self.lines if line.get("event") == event]


@pytest.fixture
async def spawn() -> AsyncIterator[Any]:
    procs: list[asyncio.subprocess.Process] = []

    async def start(*args: str) -> Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mcp_oauthd",
            *args,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        procs.append(proc)
        return Process(proc)

    yield start
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_two_workers_share_one_port_and_one_sqlite_file(
    tmp_path: Path, spawn: Any, http: aiohttp.ClientSession
) -> None:
    port = free_port()
    daemon = await spawn("serve", "--config", str(write_config(tmp_path, port)), "--workers", "2")
    ready = await daemon.wait_for("ready", count=2)
    assert {line["worker"] for line in ready} == {0, 1}
    issuer = f"http://127.0.0.1:{port}"
    # Several logins and refreshes: connections land on either worker, state is shared.
    for _ in range(3):
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            body = await flow.tokens(browser, issuer, username="alice", password=DEMO_PASSWORD)
        status, refreshed, _ = await flow.token_request(
            http,
            issuer,
            {
                "grant_type": "refresh_token",
                "refresh_token": body["refresh_token"],
                "client_id": "cli",
            },
        )
        assert status == 200, refreshed
    daemon.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(daemon.proc.wait(), 60) == 0
    await daemon.wait_for("all workers stopped")


async def test_memory_storage_refuses_several_workers_with_a_clear_message(
    tmp_path: Path, spawn: Any
) -> None:
    port = free_port()
    config = write_config(tmp_path, port, storage={"type": "memory"})
    daemon = await spawn("serve", "--config", str(config), "--workers", "2")
    assert await asyncio.wait_for(daemon.proc.wait(), 60) == 1
    assert daemon.proc.stderr is not None
    err = (await daemon.proc.stderr.read()).decode()
    assert "shared storage" in err
    assert "Traceback" not in err


async def test_sigterm_lets_an_in_flight_request_finish(
    tmp_path: Path, spawn: Any, http: aiohttp.ClientSession
) -> None:
    from mcp_oauthd.testing.fake_idp import FakeOidcProvider

    port = free_port()
    async with FakeOidcProvider() as idp:
        config = write_config(
            tmp_path,
            port,
            provider={
                "type": "oidc",
                "issuer": idp.issuer,
                "client_id": idp.client_id,
                "client_secret": idp.client_secret,
                "allow_insecure_http": True,
            },
            consent={"enabled": False},
        )
        daemon = await spawn("serve", "--config", str(config))
        await daemon.wait_for("ready")
        issuer = f"http://127.0.0.1:{port}"
        browser = flow.ScriptedBrowser(http)
        hop = await browser.get(flow.authorize_url(issuer, code_challenge="a" * 43))
        assert hop.status == 302 and hop.location is not None
        answer = await idp.login(hop.location)  # the IdP approves; we hold the callback
        idp.hang = True  # the daemon's code exchange at the IdP now stalls
        callback = asyncio.create_task(
            browser.get(f"{issuer}/oauth/callback?code={answer['code']}&state={answer['state']}")
        )
        while not idp.requests_to("/token"):
            await asyncio.sleep(0.01)  # waiting for the request to reach the IdP
        daemon.proc.send_signal(signal.SIGTERM)
        await daemon.wait_for("shutting down: draining in-flight requests")
        idp.hang = False
        await idp.stop()  # release the stalled exchange: the daemon answers its client
        result = await asyncio.wait_for(callback, 30)
        assert result.status == 302
        assert "error=temporarily_unavailable" in (result.location or "")
        assert await asyncio.wait_for(daemon.proc.wait(), 30) == 0


async def test_sighup_reloads_clients_and_policy_and_keeps_the_old_config_when_broken(
    tmp_path: Path, spawn: Any, http: aiohttp.ClientSession
) -> None:
    port = free_port()
    path = write_config(tmp_path, port)
    daemon = await spawn("serve", "--config", str(path))
    await daemon.wait_for("ready")
    issuer = f"http://127.0.0.1:{port}"
    assert await flow.tokens(http, issuer, username="alice", password=DEMO_PASSWORD)

    # A new client and a policy that shuts alice out, applied without a restart.
    new_clients = [
        {"client_id": "cli", "redirect_uris": ["http://127.0.0.1/callback"]},
        {"client_id": "late", "redirect_uris": ["http://127.0.0.1/late"]},
    ]
    write_config(
        tmp_path, port, clients=new_clients, access_policy={"allowed_emails": ["bob@x.example"]}
    )
    daemon.proc.send_signal(signal.SIGHUP)
    [reloaded] = await daemon.wait_for("config reloaded")
    assert set(reloaded["changed"]) == {"clients", "access_policy"}
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        result = await flow.login(
            browser,
            issuer,
            username="alice",
            password=DEMO_PASSWORD,
            client_id="late",
            redirect_uri="http://127.0.0.1:4444/late",
        )
    assert result.hop.status == 403  # the new client exists; the new policy refuses alice

    # A broken file is refused; the daemon keeps serving with what it had.
    path.write_text(path.read_text().replace("clients:", "clientz:"))
    daemon.proc.send_signal(signal.SIGHUP)
    await daemon.wait_for("config reload refused; keeping the running config")
    # An issuer change needs a restart: refused too.
    write_config(tmp_path, port, issuer=f"http://127.0.0.1:{port + 1}", clients=new_clients)
    daemon.proc.send_signal(signal.SIGHUP)
    refusals = await daemon.wait_for("config reload refused; keeping the running config", 2)
    assert refusals[-1]["restart_needed"] == ["issuer"]
    async with http.get(issuer + "/readyz") as resp:
        assert resp.status == 200
    daemon.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(daemon.proc.wait(), 60) == 0

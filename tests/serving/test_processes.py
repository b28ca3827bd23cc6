"""The daemon as a real process: worker processes on one port sharing one SQLite file,
and a graceful drain on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import aiohttp

from mcp_oauthd.testing import flow
from tests.conftest import DEMO_PASSWORD, free_port
from tests.processes import write_config


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


async def test_a_sigterm_while_workers_start_stops_every_worker_cleanly(
    tmp_path: Path, spawn: Any
) -> None:
    """A SIGTERM that arrives before a worker's loop has its handlers waits for them
    (blocked, pending) instead of killing the worker undrained or orphaning it."""
    port = free_port()
    daemon = await spawn("serve", "--config", str(write_config(tmp_path, port)), "--workers", "2")
    await daemon.wait_for("workers started")
    daemon.proc.send_signal(signal.SIGTERM)  # the workers are still importing and opening
    await daemon.wait_for("all workers stopped")
    assert await asyncio.wait_for(daemon.proc.wait(), 60) == 0, daemon.lines
    assert len(await daemon.wait_for("stopped", count=2)) == 2


async def test_a_worker_that_cannot_start_is_one_line_and_a_failed_exit_status(
    tmp_path: Path, spawn: Any
) -> None:
    port = free_port()
    config = write_config(tmp_path, port)
    (tmp_path / "state.db").write_bytes(b"this is not an SQLite database" * 100)
    daemon = await spawn("serve", "--config", str(config), "--workers", "2")
    failed = await daemon.wait_for("worker failed", count=2)
    assert {line["exitcode"] for line in failed} == {1}
    assert await asyncio.wait_for(daemon.proc.wait(), 60) == 1
    said = "".join(line.get("raw", "") for line in daemon.lines)
    assert said.count("StorageUnavailable") == 2, daemon.lines
    assert "Traceback" not in said


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

"""End to end: the example plugins, pip-installed and named in a YAML config, run a real
daemon; an MCP client logs in through the fixed_user provider, its tokens live in the
journal storage and survive a restart of the daemon."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp

from mcp_oauthd.app import create_app
from mcp_oauthd.clock import FakeClock
from mcp_oauthd.config.loader import load_config
from mcp_oauthd.config.models import Config
from mcp_oauthd.security.audit import Auditor
from mcp_oauthd.testing import flow
from mcp_oauthd.testing.daemon import running


def plugin_config(tmp_path: Path, port: int) -> Config:
    path = tmp_path / "mcp-oauthd.yaml"
    path.write_text(
        f"""\
issuer: http://127.0.0.1:{port}
server: {{host: 127.0.0.1, port: {port}}}
provider:
  type: fixed_user
  username: ada
  email: ada@example.com
  email_verified: true
storage:
  type: journal
  path: {tmp_path}/journal.jsonl
  fsync: false
security:
  state_dir: {tmp_path}
resources:
  - uri: http://127.0.0.1:9999/mcp
    scopes: [files:read]
    default: true
clients:
  - client_id: cli
    client_name: Test CLI
    redirect_uris: [http://127.0.0.1/callback]
""",
        encoding="utf-8",
    )
    return load_config(path, environ={})


def journal_ops(tmp_path: Path) -> list[str]:
    lines = (tmp_path / "journal.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["op"] for line in lines]


async def test_a_client_logs_in_through_the_example_provider_and_storage(
    example_installed: Path, tmp_path: Path, port: int, http: aiohttp.ClientSession
) -> None:
    config = plugin_config(tmp_path, port)
    auditor = Auditor()
    app = create_app(config, clock=FakeClock(), auditor=auditor)

    async with running(app, port) as url:
        # No password page: fixed_user approves upstream at once, after our consent page.
        result = await flow.login(http, url, username="", password="")
        query = result.query
        status, body, _ = await flow.token_request(
            http,
            url,
            {
                "grant_type": "authorization_code",
                "code": query["code"],
                "code_verifier": result.verifier,
                "client_id": "cli",
                "redirect_uri": flow.DEFAULT_REDIRECT,
            },
        )

    assert query["state"] == "client-state-123"
    assert query["iss"] == config.issuer
    assert [h for h in result.browser.history if "/login" in h.url] == []
    assert status == 200, body
    assert body["access_token"].startswith("mcpat_")
    assert body["refresh_token"].startswith("mcprt_")
    [succeeded] = [e for e in auditor.events if e.get("event") == "login.succeeded"]
    assert succeeded["subject"] == "fixed_user:ada"
    # The daemon's state went through the plugin storage: the provider's one-time code,
    # our code, the grant and its tokens.
    ops = journal_ops(tmp_path)
    assert ops.count("put_code") == 1
    assert ops.count("consume_code") == 1
    assert ops.count("create_grant") == 1
    assert "take_ephemeral" in ops


async def test_tokens_kept_by_the_example_storage_survive_a_daemon_restart(
    example_installed: Path, tmp_path: Path, port: int, http: aiohttp.ClientSession
) -> None:
    config = plugin_config(tmp_path, port)
    async with running(create_app(config, clock=FakeClock()), port) as url:
        tokens = await flow.tokens(http, url, username="", password="")

    async with running(create_app(config, clock=FakeClock()), port) as url:
        status, body, _ = await flow.token_request(
            http,
            url,
            {
                "grant_type": "refresh_token",
                "refresh_token": tokens["refresh_token"],
                "client_id": "cli",
            },
        )

    assert status == 200, body
    assert body["refresh_token"] != tokens["refresh_token"]
    assert journal_ops(tmp_path).count("rotate_refresh_token") == 1

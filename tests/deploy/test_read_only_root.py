"""The container image's promise, checked without Docker: with the image's environment and
default config, the real daemon runs on a read-only root filesystem where only the state
directory is writable (what `docker run --read-only -v state:/var/lib/mcp-oauthd` gives),
serves a whole login and a refresh, and drains on SIGTERM.

A private mount namespace (``unshare -m``) makes ``/`` read-only for the daemon only; the
state directory is bind-mounted writable. Skipped where mount namespaces are not allowed.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from mcp_oauthd.testing import flow
from tests.conftest import free_port
from tests.deploy.recipes import ROOT, STATE_DIR
from tests.deploy.test_dockerfile import parse_dockerfile

# Run inside the namespace: make the state directory its own (writable) mount, make the
# root read-only, prove a write next to the state directory fails, then become the daemon.
SCRIPT = """
set -e
mount --bind "$STATE" "$STATE"
mount -o remount,bind,ro /
if touch "$PROBE" 2>/dev/null; then echo "the root filesystem is writable" >&2; exit 99; fi
exec "$@"
"""


def _event(line: str) -> object:
    """The ``event`` of one JSON log line (None for any other line)."""
    try:
        parsed = json.loads(line)
    except ValueError:
        return None
    return parsed.get("event") if isinstance(parsed, dict) else None


def _namespaces_allowed() -> bool:
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    try:
        done = subprocess.run(
            [unshare, "-m", "--propagation", "private", "true"], capture_output=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


pytestmark = pytest.mark.skipif(
    not _namespaces_allowed(), reason="mount namespaces (unshare -m) are not allowed here"
)


async def test_the_image_config_runs_a_login_on_a_read_only_root_and_drains(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    runtime = parse_dockerfile((ROOT / "Dockerfile").read_text())[-1]
    env = runtime.env()
    state = tmp_path / "state"
    state.mkdir()
    baked = (ROOT / "deploy" / "docker" / "config.yaml").read_text()
    config = tmp_path / "config.yaml"
    config.write_text(baked.replace(STATE_DIR, str(state)))
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    environ = {
        **os.environ,
        **env,  # the image's ENV: PYTHONDONTWRITEBYTECODE=1, ...
        "MCP_OAUTHD_CONFIG": str(config),
        "MCP_OAUTHD_ISSUER": issuer,
        "MCP_OAUTHD_HOST": "127.0.0.1",
        "MCP_OAUTHD_PORT": str(port),
        "STATE": str(state),
        "PROBE": str(tmp_path / "written-outside-the-volume"),
    }
    command = [sys.executable, "-m", "mcp_oauthd", *json.loads(runtime.last("CMD"))]
    proc = await asyncio.create_subprocess_exec(
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        SCRIPT,
        "sh",
        *command,
        env=environ,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        cwd=state,  # the image's WORKDIR is the state volume
    )
    assert proc.stderr is not None
    lines: list[str] = []
    try:
        while True:
            raw = await asyncio.wait_for(proc.stderr.readline(), 60)
            assert raw, f"the daemon stopped: {lines[-5:]}"
            lines.append(raw.decode(errors="replace"))
            if _event(lines[-1]) == "ready":
                break
        tokens = await flow.tokens(
            http, issuer, username="demo", password="demo", client_id="demo-client"
        )
        status, body, _ = await flow.token_request(
            http,
            issuer,
            {
                "grant_type": "refresh_token",
                "refresh_token": tokens["refresh_token"],
                "client_id": "demo-client",
            },
        )
        assert status == 200, body
        async with http.get(issuer + "/readyz") as resp:
            assert resp.status == 200
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    rest = (await proc.stderr.read()).decode(errors="replace")
    assert "Read-only file system" not in "".join(lines) + rest
    assert not (tmp_path / "written-outside-the-volume").exists()
    # Everything it wrote is in the volume.
    assert {p.name for p in state.iterdir()} >= {"mcp-oauthd.db", "mcp-oauthd.keys.json"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "state"]

"""Run the real daemon as a subprocess (``python -m mcp_oauthd``) and read its JSON log
lines: the ``spawn`` fixture and the config writer the process tests share."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import DEMO_HASH


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
            try:
                raw = await asyncio.wait_for(self.proc.stderr.readline(), 60)
            except TimeoutError:
                raise AssertionError(f"no {event!r} within 60 s: {self.lines[-8:]}") from None
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

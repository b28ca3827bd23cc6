"""A real OpenID Connect provider nobody here wrote: panva's certified ``oidc-provider`` on
Node.js (``oidc-provider/server.mjs``), installed from the committed lock file and run as a
subprocess on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NODE_DIR = Path(__file__).parent / "oidc-provider"
LOCK_FILE = NODE_DIR / "package-lock.json"
# Written after a successful `npm ci`: the hash of the lock file the tree was installed from.
STAMP = NODE_DIR / "node_modules" / ".mcp-oauthd-lock-sha256"

CLIENT_ID = "mcp-oauthd"
# Spaces and symbols exercise the form-urlencoding of HTTP Basic credentials (RFC 6749 §2.3.1).
CLIENT_SECRET = "interop secret: /+=&%"
START_TIMEOUT = 30.0  # an upper bound on reaching READY, not a wait


class NodeSetupError(Exception):
    """npm is missing or ``npm ci`` failed; the message says which."""


def install_node_modules() -> None:
    """``npm ci`` when node_modules is missing or was installed from another lock file.

    An exclusive lock (in the temp dir, keyed by this folder) serialises concurrent test
    runs that share this working tree."""
    npm = shutil.which("npm")
    if npm is None:
        raise NodeSetupError("node is installed but npm is not: cannot install oidc-provider")
    wanted = hashlib.sha256(LOCK_FILE.read_bytes()).hexdigest()
    key = hashlib.sha256(str(NODE_DIR).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"mcp-oauthd-npm-{key}.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if STAMP.exists() and STAMP.read_text().strip() == wanted:
            return
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--prefer-offline"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if result.returncode != 0:
            raise NodeSetupError(f"npm ci failed in {NODE_DIR}:\n{result.stdout}\n{result.stderr}")
        STAMP.write_text(wanted + "\n")


@dataclass
class NodeOidcProvider:
    """A running oidc-provider: its issuer, mcp-oauthd's client credentials there, and what
    it printed (``EVENT`` lines parsed into ``events``; stderr kept for failure messages)."""

    issuer: str
    client_id: str
    client_secret: str
    process: asyncio.subprocess.Process
    stderr: list[str]
    events: list[dict[str, Any]] = field(default_factory=list)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def named(self, name: str, **fields: Any) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e.get("event") == name and all(e.get(k) == v for k, v in fields.items())
        ]

    async def wait_for_event(self, name: str, count: int = 1, **fields: Any) -> dict[str, Any]:
        """The ``count``-th event ``name`` with these fields, read off the pipe. The provider
        prints an event before it answers the request that caused it, so after a response
        the line is already in the pipe; the timeout only bounds a failing test."""

        async def wait() -> None:
            async with self._changed:
                await self._changed.wait_for(
                    lambda: len(self.named(name, **fields)) >= count or self._stdout_closed
                )

        with contextlib.suppress(TimeoutError):  # the assert below says what was missing
            await asyncio.wait_for(wait(), timeout=10)
        matches = self.named(name, **fields)
        assert len(matches) >= count, (name, fields, self.events, self.stderr[-20:])
        return matches[count - 1]

    @property
    def _stdout_closed(self) -> bool:
        return bool(self._tasks) and self._tasks[0].done()

    async def _read_stdout(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            text = line.decode(errors="replace").rstrip("\n")
            if text.startswith("EVENT "):
                async with self._changed:
                    self.events.append(json.loads(text.removeprefix("EVENT ")))
                    self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()  # EOF: the process ended; no waiter may hang

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _collect(stream: asyncio.StreamReader, into: list[str]) -> None:
    while line := await stream.readline():
        into.append(line.decode(errors="replace").rstrip("\n"))


async def start_node_oidc_provider(
    node: str, redirect_uris: list[str], *, access_token_ttl: int = 60
) -> NodeOidcProvider:
    """Run ``node server.mjs`` on an OS-chosen loopback port with mcp-oauthd registered as a
    confidential client for ``redirect_uris``; return once it printed READY."""
    env = {
        **os.environ,
        "CLIENT_ID": CLIENT_ID,
        "CLIENT_SECRET": CLIENT_SECRET,
        "REDIRECT_URIS": " ".join(redirect_uris),
        "ACCESS_TOKEN_TTL": str(access_token_ttl),
    }
    env.pop("DEBUG", None)  # oidc-provider's debug logging would flood the pipe
    process = await asyncio.create_subprocess_exec(
        node,
        "server.mjs",
        "0",
        cwd=NODE_DIR,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    stderr: list[str] = []
    stderr_task = asyncio.create_task(_collect(process.stderr, stderr))
    try:
        ready = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT)
    except TimeoutError:
        ready = b""
    text = ready.decode(errors="replace").strip()
    if not text.startswith("READY "):
        if process.returncode is None:
            process.kill()
        await process.wait()
        await stderr_task
        raise RuntimeError(f"oidc-provider did not start ({text!r}):\n" + "\n".join(stderr))
    provider = NodeOidcProvider(
        issuer=text.removeprefix("READY "),
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        process=process,
        stderr=stderr,
    )
    provider._tasks = [asyncio.create_task(provider._read_stdout(process.stdout)), stderr_task]
    return provider

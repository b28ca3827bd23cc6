"""Starting, watching and stopping the processes under test (Linux: reads /proc)."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raise_open_files(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE (children inherit it); return the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    log_path: Path
    spawned_at: float  # time.perf_counter() just before the spawn

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def spawn(
    cmd: list[str], log_path: Path, *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> Proc:
    """Start ``cmd`` in its own session, stdout and stderr to ``log_path`` (never the
    terminal: a busy terminal would be the bottleneck)."""
    log = log_path.open("wb")
    spawned_at = time.perf_counter()
    try:
        popen = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            start_new_session=True,
        )
    finally:
        log.close()
    return Proc(popen, log_path, spawned_at)


def get_status(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return 0


def wait_ready(proc: Proc, url: str, timeout: float) -> float:
    """Poll ``url`` until it answers 200; return ms from spawn to that answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(
                f"process {proc.pid} exited ({proc.popen.returncode}) before it was ready:\n"
                + proc.log_tail()
            )
        if get_status(url, timeout=1.0) == 200:
            return (time.perf_counter() - proc.spawned_at) * 1000
        time.sleep(0.01)  # polling a starting process, not pacing a test
    raise RuntimeError(f"process {proc.pid} not ready after {timeout:.0f} s:\n" + proc.log_tail())


def stop(proc: Proc, timeout: float = 20.0) -> None:
    """SIGTERM (the daemon drains; a worker parent forwards it), then SIGKILL to the
    process group we created if it does not end in time."""
    if proc.alive():
        with contextlib.suppress(ProcessLookupError):
            proc.popen.send_signal(signal.SIGTERM)
        try:
            proc.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # our own session: this daemon only
            proc.popen.wait(timeout=10)


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [int(x) for x in path.read_text().split()]
    except OSError:
        return []


def cpu_seconds(pid: int) -> float:
    """User + system CPU time ``pid`` has used, from /proc/<pid>/stat (clock ticks)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces; the fields after its ")" are fixed.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (VmRSS from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def log_events(path: Path, event: str) -> list[dict[str, Any]]:
    """The JSON log lines of ``path`` whose ``event`` is ``event``."""
    found = []
    try:
        handle = path.open(errors="replace")
    except OSError:
        return []
    with handle:
        for line in handle:
            if f'"{event}"' not in line:
                continue
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict) and data.get("event") == event:
                found.append(data)
    return found


def wait_for_event(
    path: Path, event: str, count: int = 1, timeout: float = 10.0
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        found = log_events(path, event)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)  # the line is written right after the readiness answer

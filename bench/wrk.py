"""Running wrk and reading what it reports.

``parse_output`` is pure (unit-tested); ``run`` shells out to the ``wrk`` binary (Debian
package ``wrk``; ``bench/run`` installs it when missing).
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.lua import JSON_MARKER


class WrkError(RuntimeError):
    """wrk is missing, failed, or printed no result."""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    connect_errors: int = 0
    read_errors: int = 0
    write_errors: int = 0
    timeouts: int = 0
    non_2xx: int = 0  # wrk's "status" errors: responses with a status >= 400
    used_max: int = 0  # most pool values one thread used (single-use pools)
    exhausted: int = 0  # requests sent after a thread's single-use pool ran out
    threads: int = 1
    #: CPU seconds the server process spent during the load (user + system), when known.
    server_cpu_s: float | None = None

    @property
    def cpu_us_per_request(self) -> float | None:
        """Server CPU per request: unlike req/s, barely moved by what else the machine runs
        (a busy neighbour slows the clock, not the instructions a request takes)."""
        if self.server_cpu_s is None or self.requests <= 0:
            return None
        return self.server_cpu_s * 1e6 / self.requests

    @property
    def rps(self) -> float:
        """Requests per second, all responses counted (errors are reported apart)."""
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def socket_errors(self) -> int:
        return self.connect_errors + self.read_errors + self.write_errors + self.timeouts

    @property
    def errors(self) -> int:
        return self.socket_errors + self.non_2xx

    def error_counts(self) -> dict[str, int]:
        return {
            "connect": self.connect_errors,
            "read": self.read_errors,
            "write": self.write_errors,
            "timeout": self.timeouts,
            # A thread past its single-use pool sends a value that must fail: those
            # answers are counted as `exhausted`, not as errors of the daemon.
            "non_2xx": max(0, self.non_2xx - self.exhausted),
            "exhausted": self.exhausted,
        }


def parse_output(stdout: str) -> WrkResult:
    """The result from the ``BENCH_JSON`` line our Lua ``done()`` prints."""
    for line in stdout.splitlines():
        if line.startswith(JSON_MARKER):
            data = json.loads(line[len(JSON_MARKER) :])
            break
    else:
        raise WrkError("wrk printed no BENCH_JSON line:\n" + stdout[-2000:])
    us = 1000.0
    return WrkResult(
        requests=int(data["requests"]),
        duration_s=int(data["duration_us"]) / 1_000_000,
        p50_ms=float(data["p50_us"]) / us,
        p90_ms=float(data["p90_us"]) / us,
        p99_ms=float(data["p99_us"]) / us,
        mean_ms=float(data["mean_us"]) / us,
        max_ms=float(data["max_us"]) / us,
        connect_errors=int(data["connect"]),
        read_errors=int(data["read"]),
        write_errors=int(data["write"]),
        timeouts=int(data["timeout"]),
        non_2xx=int(data["status"]),
        used_max=int(data["used_max"]),
        exhausted=int(data["exhausted"]),
        threads=int(data["threads"]),
    )


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise WrkError("wrk is not installed: run bench/run (installs it), or apt-get install wrk")
    return found


def command(
    url: str,
    script: Path,
    *,
    connections: int,
    threads: int,
    duration: float,
    timeout: float,
    pool: Path | None = None,
    start: int = 0,
    once: bool = False,
) -> list[str]:
    """The wrk command line (pure)."""
    threads = max(1, min(threads, connections))
    return [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        f"--timeout={max(1, round(timeout))}s",
        "-s",
        str(script),
        url,
        "--",
        str(pool) if pool is not None else "-",
        str(start),
        str(threads),
        "once" if once else "cycle",
    ]


def run(args: list[str], *, wall_timeout: float) -> WrkResult:
    binary = wrk_binary()
    try:
        done = subprocess.run(
            [binary, *args[1:]],
            capture_output=True,
            text=True,
            timeout=wall_timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise WrkError(f"wrk did not finish within {wall_timeout:.0f} s") from None
    if done.returncode != 0:
        raise WrkError(f"wrk exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return parse_output(done.stdout)


def merged(results: Sequence[WrkResult]) -> WrkResult:
    """Several runs against one server as one (pure): requests, time, errors and CPU add
    up; the median of the runs' medians; the worst run's p90, p99 and maximum (a tail
    seen in any run is a tail); the mean weighted by requests."""
    if not results:
        raise ValueError("nothing to merge")
    requests = sum(r.requests for r in results)
    cpu = [r.server_cpu_s for r in results]
    return WrkResult(
        requests=requests,
        duration_s=sum(r.duration_s for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p90_ms=max(r.p90_ms for r in results),
        p99_ms=max(r.p99_ms for r in results),
        mean_ms=sum(r.mean_ms * r.requests for r in results) / requests if requests else 0.0,
        max_ms=max(r.max_ms for r in results),
        connect_errors=sum(r.connect_errors for r in results),
        read_errors=sum(r.read_errors for r in results),
        write_errors=sum(r.write_errors for r in results),
        timeouts=sum(r.timeouts for r in results),
        non_2xx=sum(r.non_2xx for r in results),
        used_max=sum(r.used_max for r in results),
        exhausted=sum(r.exhausted for r in results),
        threads=results[0].threads,
        server_cpu_s=None if None in cpu else sum(c for c in cpu if c is not None),
    )


def next_start(start: int, result: WrkResult) -> int:
    """First pool line no thread of a single-use run has touched (pure)."""
    return start + result.used_max * max(1, result.threads)

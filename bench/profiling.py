"""Sampling profiles of the daemon under load with py-spy (``pip install py-spy``; it
reads the target's memory with ptrace, which works as root).

``record`` writes py-spy's collapsed stacks (``--format raw``); ``summarize`` (pure,
unit-tested) turns them into the tables ``bench/README.md`` quotes: the functions with the
most samples on top of the stack (self) and anywhere on it (inclusive), and the share of
samples by cost category.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

#: Ordered: the first category whose pattern matches any frame of a stack (leaf first)
#: takes the sample. Patterns match py-spy frames "function (file.py:line)".
CATEGORIES: tuple[tuple[str, str], ...] = (
    ("logging (structlog/stdlib)", r"structlog/|/logging/|observability/logging\.py"),
    ("metrics (prometheus)", r"prometheus_client/|observability/metrics\.py"),
    ("rate limiting", r"security/ratelimit\.py|http/ratelimit\.py"),
    ("pydantic (models, validation, copies)", r"pydantic/|pydantic_core"),
    ("json encode/decode", r"json/(encoder|decoder|__init__)\.py"),
    ("sqlite thread hop / executor", r"concurrent/futures/|run_in_executor|threading\.py"),
    ("sqlite queries", r"storage/sqlite\.py"),
    ("redis client", r"redis/"),
    ("crypto / hashing", r"hashlib|hmac|argon2|cryptography/|joserfc/|security/crypto\.py"),
    ("form / body parsing", r"web_request\.py.*\b(post|read|text)\b|multidict|urllib/parse"),
    ("aiohttp HTTP machinery", r"aiohttp/"),
    ("asyncio event loop", r"asyncio/"),
)

_FRAME_FILE = re.compile(r"\((?P<file>[^():]+):(?P<line>\d+)\)$")


@dataclass(frozen=True)
class Summary:
    samples: int
    self_top: list[tuple[str, int]]
    inclusive_top: list[tuple[str, int]]
    categories: list[tuple[str, int]]

    def format(self, limit: int = 15) -> str:
        def pct(n: int) -> str:
            return f"{100 * n / self.samples:5.1f}%" if self.samples else "  -  "

        out = [f"samples: {self.samples}", "", "by category (first match, leaf first):"]
        out += [f"  {pct(n)}  {name}" for name, n in self.categories]
        out += ["", "self (top of stack):"]
        out += [f"  {pct(n)}  {frame}" for frame, n in self.self_top[:limit]]
        out += ["", "inclusive (anywhere on the stack):"]
        out += [f"  {pct(n)}  {frame}" for frame, n in self.inclusive_top[:limit]]
        return "\n".join(out)


def short_frame(frame: str) -> str:
    """``handle (/x/.venv/lib/python3.11/site-packages/aiohttp/web.py:12)`` ->
    ``handle (aiohttp/web.py:12)``."""
    match = _FRAME_FILE.search(frame)
    if match is None:
        return frame.strip()
    path = match.group("file")
    for marker in ("site-packages/", "/lib/python3.11/", "/lib/python3.12/", "/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{frame[: match.start()].strip()} ({path}:{match.group('line')})"


def parse_collapsed(text: str) -> list[tuple[list[str], int]]:
    """``a;b;c 12`` lines -> [([a, b, c], 12), ...] (root first)."""
    stacks = []
    for line in text.splitlines():
        line = line.rstrip()
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        try:
            samples = int(count)
        except ValueError:
            continue
        stacks.append((stack.split(";"), samples))
    return stacks


def categorize(frames: Iterable[str]) -> str:
    ordered = list(frames)
    for name, pattern in CATEGORIES:
        regex = re.compile(pattern)
        if any(regex.search(frame) for frame in reversed(ordered)):
            return name
    return "other (mcp-oauthd code, builtins)"


def summarize(text: str) -> Summary:
    stacks = parse_collapsed(text)
    total = sum(n for _, n in stacks)
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    for frames, n in stacks:
        if not frames:
            continue
        self_counts[short_frame(frames[-1])] += n
        for frame in {short_frame(f) for f in frames}:
            inclusive[frame] += n
        categories[categorize(frames)] += n
    return Summary(
        samples=total,
        self_top=self_counts.most_common(),
        inclusive_top=inclusive.most_common(),
        categories=categories.most_common(),
    )


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")


def record_command(
    binary: str, pid: int, seconds: float, out: Path, rate: int = 200, gil: bool = False
) -> list[str]:
    """``gil``: sample only the thread holding the GIL (Python CPU work; a thread parked
    in a system call or waiting for a CPU drops out)."""
    return [
        binary,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(seconds))),
        "--rate",
        str(rate),
        "--format",
        "raw",
        "--nonblocking",  # do not pause the daemon for each sample
        "--output",
        str(out),
        *(["--gil"] if gil else []),
    ]


def start_recording(
    pid: int, seconds: float, out: Path, gil: bool = False
) -> subprocess.Popen[bytes]:
    binary = py_spy()
    if binary is None:
        raise RuntimeError(
            "py-spy is not installed: .venv/bin/python -m pip install py-spy "
            "(or pip install -e '.[bench]')"
        )
    return subprocess.Popen(
        record_command(binary, pid, seconds, out, gil=gil),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

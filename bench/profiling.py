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

#: Categories of cost. A sample belongs to the leaf-most frame that matches one of these
#: patterns (tried in this order on each frame); a frame of mcp-oauthd's own code that
#: matches none ends the search as "mcp-oauthd code". Patterns match py-spy frames
#: ``function (file.py:line)``.
CATEGORIES: tuple[tuple[str, str], ...] = (
    ("logging (structlog/stdlib)", r"structlog/|/logging/|observability/logging\.py"),
    (
        "metrics (prometheus, storage wrapper)",
        r"prometheus_client/|observability/metrics\.py|observability/instrumented\.py",
    ),
    ("tracing wrapper", r"observability/tracing\.py|opentelemetry/"),
    ("rate limiting", r"security/ratelimit\.py|http/ratelimit\.py"),
    ("pydantic (models, validation, copies)", r"pydantic/|pydantic_core"),
    ("json encode/decode", r"json/(encoder|decoder|__init__)\.py"),
    ("thread hop (executor, futures)", r"concurrent/futures/|threading\.py|queue\.py"),
    ("sqlite queries", r"storage/sqlite\.py"),
    ("redis client", r"redis/"),
    (
        "crypto / hashing",
        r"hashlib|hmac|argon2|cryptography/|joserfc/|security/crypto\.py|oauth/pkce\.py",
    ),
    ("form / body parsing", r"multidict|urllib/parse|web_request\.py"),
    ("aiohttp HTTP machinery", r"aiohttp/|yarl/"),
    ("asyncio event loop", r"asyncio/|selectors\.py"),
)
OURS = "mcp-oauthd code (self)"
_OURS = re.compile(r"mcp_oauthd/")
_COMPILED = tuple((name, re.compile(pattern)) for name, pattern in CATEGORIES)

_FRAME_FILE = re.compile(r"\((?P<file>[^():]+):(?P<line>\d+)\)$")


@dataclass(frozen=True)
class Summary:
    samples: int
    self_top: list[tuple[str, int]]  # by function, top of the stack
    inclusive_top: list[tuple[str, int]]  # by function, anywhere on the stack
    ours: list[tuple[str, int]]  # mcp-oauthd functions, anywhere on the stack
    categories: list[tuple[str, int]]

    def format(self, limit: int = 15) -> str:
        def pct(n: int) -> str:
            return f"{100 * n / self.samples:5.1f}%" if self.samples else "  -  "

        out = [f"samples: {self.samples}", "", "by category (leaf-most telling frame):"]
        out += [f"  {pct(n)}  {name}" for name, n in self.categories]
        out += ["", "self (top of stack), by function:"]
        out += [f"  {pct(n)}  {frame}" for frame, n in self.self_top[:limit]]
        out += ["", "mcp-oauthd functions, inclusive (anywhere on the stack):"]
        out += [f"  {pct(n)}  {frame}" for frame, n in self.ours[: limit * 2]]
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
    """The cost category of one stack (root first), by its leaf-most telling frame."""
    for frame in reversed(list(frames)):
        for name, regex in _COMPILED:
            if regex.search(frame):
                return name
        if _OURS.search(frame):
            return OURS
    return "other"


def function_of(frame: str) -> str:
    """A short frame without its line number: ``handle (aiohttp/web.py)``."""
    return re.sub(r":\d+\)$", ")", short_frame(frame))


def summarize(text: str) -> Summary:
    stacks = parse_collapsed(text)
    total = sum(n for _, n in stacks)
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    for frames, n in stacks:
        if not frames:
            continue
        self_counts[function_of(frames[-1])] += n
        for function in {function_of(f) for f in frames}:
            inclusive[function] += n
            if "mcp_oauthd/" in function and not function.startswith(_ENTRY_POINTS):
                ours[function] += n
        categories[categorize(frames)] += n
    return Summary(
        samples=total,
        self_top=self_counts.most_common(),
        inclusive_top=inclusive.most_common(),
        ours=ours.most_common(),
        categories=categories.most_common(),
    )


#: The serve loop's callers, on every stack: left out of the "ours" view.
_ENTRY_POINTS = ("main (", "_dispatch (", "_cmd_serve (", "run (", "serve (")


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

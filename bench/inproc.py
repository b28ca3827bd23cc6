"""In-process cost per request: the real app fed raw HTTP/1.1 over fake connections.

    python -m bench.inproc SCENARIO [--backend memory|sqlite] [--requests N] [--grants N]
                                    [--access-pool N] [--no-lane] [--callgrind]
                                    [--profile tottime|cumtime]

What it is for: A/B comparisons of code changes on a noisy, shared machine. Requests per
second (``python -m bench``) swing with whatever else the machine is doing; the process's
own CPU time per request swings far less, and the instructions per request counted under
callgrind (``--callgrind``) do not swing at all: the same code and the same state count
the same, to a fraction of a percent, however busy the machine is. Decide with
instruction counts; use CPU times as a sanity check.

How it differs from ``python -m bench``: no sockets, no wrk, no second process, no kernel
network stack. The app is built exactly as the benchmark's daemon builds it —
``mcp_oauthd.app.create_app`` on the benchmark's config (:func:`bench.configs.daemon_config`:
the shipped defaults with raised rate-limit budgets), state seeded by
:func:`bench.seeding.seed`, an ``aiohttp.web.AppRunner`` with the hot lane installed on its
server — but its connections are 64 protocol objects from ``runner.server()`` with a fake
transport. Each round hands every connection one raw request (``data_received``), waits
until all 64 responses are written and checks that every one is a 200 (in the warm-up,
introspection answers must also say ``"active":true``: an unknown token is answered 200
too, by a cheaper path). So it measures what the process itself spends per request
(parsing, routing, the pipeline, storage, JSON, logging), not what the kernel or the load
generator spend.

- CPU (default): ``time.process_time`` over 12 blocks of rounds; the minimum and the
  median per request of those blocks (the minimum is the least disturbed).
- ``--callgrind``: re-runs itself under ``valgrind --tool=callgrind --instr-atstart=no``;
  instrumentation is switched on (``callgrind_control -i on PID``) only around the measured
  rounds, so start-up, seeding and the warm-up are not counted; the ``totals:`` of the
  output file(s) divided by the requests is the figure.
- ``--profile KEY``: a cProfile table (top 40, sorted by KEY) of the measured rounds; the
  CPU figures of such a run include the profiler's own cost.
- ``--no-lane``: do not install the hot lane (``install_hot_lane``), so introspection and
  ``/auth/verify`` take aiohttp's router and middleware chain: the lane's gain is the
  difference to a normal run.

``baseline`` is the bare aiohttp app of :mod:`bench.baseline` (no storage, no seeding).
``refresh`` uses every seeded refresh token once (a rotation, never the replay path), so
at least as many grants as requests (warm-up included) are seeded whatever ``--grants``
says. Log lines are rendered as the daemon renders them when its stderr is a file (JSON,
a line-buffered stream) and written to ``/dev/null``. No redis backend: this tool never
touches shared services.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import itertools
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import yaml
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from bench import baseline, configs, scenarios
from bench.seeding import SeedSpec, seed

SCENARIOS = ("baseline", "introspect", "verify", "refresh")
BACKENDS = ("memory", "sqlite")
PROFILE_KEYS = ("tottime", "cumtime")
CONNECTIONS = 64
WARMUP_ROUNDS = 10
BLOCKS = 12
DEFAULT_REQUESTS = 30_000
DEFAULT_CALLGRIND_REQUESTS = 2_000
DEFAULT_GRANTS = 3_000
DEFAULT_ACCESS_POOL = 1_000
PROFILE_LINES = 40
#: Seeds the config's keys and the resource server's introspection secret.
SEED = "inproc"
REPO = Path(__file__).resolve().parents[1]
#: The baseline's handler ignores the form; its token is a placeholder.
BASELINE_TOKENS = ["x"] * 1000
CALLGRIND_TOOLS = ("valgrind", "callgrind_control")


class MeasureError(Exception):
    """The measurement could not be made (a wrong answer, a failed child, too few tokens)."""


class ToolMissing(MeasureError):
    """valgrind or callgrind_control is not installed."""


@dataclass(frozen=True)
class Options:
    scenario: str
    backend: str = "memory"
    requests: int = DEFAULT_REQUESTS
    grants: int = DEFAULT_GRANTS
    access_pool: int = DEFAULT_ACCESS_POOL
    lane: bool = True
    callgrind: bool = False
    profile: str | None = None

    @property
    def rounds(self) -> int:
        """Rounds of CONNECTIONS requests that ``requests`` asks for (at least one)."""
        return max(1, self.requests // CONNECTIONS)

    @property
    def rounds_per_block(self) -> int:
        return max(1, self.rounds // BLOCKS)

    @property
    def measured_rounds(self) -> int:
        """Rounds actually measured: whole blocks for CPU, every round under callgrind."""
        return self.rounds if self.callgrind else self.rounds_per_block * BLOCKS

    @property
    def label(self) -> str:
        return "aiohttp" if self.scenario == "baseline" else self.backend


@dataclass(frozen=True)
class CpuResult:
    options: Options
    requests: int  # measured
    answered: int  # every response checked (warm-up included): all were 200
    min_us: float
    median_us: float

    def line(self) -> str:
        opts = self.options
        return (
            f"{opts.scenario:<11} {opts.label:<8} cpu min {self.min_us:.1f} us/req, "
            f"median {self.median_us:.1f} ({self.requests:,} requests{_notes(opts)})"
        )


@dataclass(frozen=True)
class CountResult:
    options: Options
    requests: int
    instructions: int

    @property
    def per_request(self) -> float:
        return self.instructions / self.requests

    def line(self) -> str:
        opts = self.options
        # Floored thousands, as the team's earlier figures (bench/README.md) were.
        thousands = self.instructions // self.requests // 1000
        return (
            f"{opts.scenario:<11} {opts.label:<8} {thousands}k instructions/req "
            f"(callgrind, {self.requests:,} requests{_notes(opts)})"
        )


def _notes(opts: Options) -> str:
    notes = []
    if not opts.lane and opts.scenario != "baseline":
        notes.append("no lane")
    if opts.profile is not None:
        notes.append("under cProfile")
    return "".join(", " + note for note in notes)


# ----------------------------------------------------------------------------- fake wire
class Responses:
    """The connections of one round whose response has not started yet."""

    def __init__(self) -> None:
        self.pending = 0
        self.done: asyncio.Future[None] | None = None

    def expect(self, count: int) -> asyncio.Future[None]:
        self.done = asyncio.get_running_loop().create_future()
        self.pending = count
        return self.done

    def started(self) -> None:
        self.pending -= 1
        if self.pending == 0 and self.done is not None and not self.done.done():
            self.done.set_result(None)


class FakeTransport(asyncio.Transport):
    """What aiohttp's protocol writes to: a buffer; the first bytes of a response tell
    :class:`Responses` that this connection has answered."""

    def __init__(self, responses: Responses) -> None:
        super().__init__()
        self.buf = bytearray()
        self.closing = False
        self._responses = responses

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self.buf:
            self._responses.started()
        self.buf += data

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        for data in list_of_data:
            self.write(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def can_write_eof(self) -> bool:
        return True


#: Introspection answers 200 for an unknown token too (RFC 7662 §2.2: ``active: false``),
#: a different, cheaper path than the one meant: the warm-up's answers must say active.
ACTIVE = b'"active":true'


def check_answers(transports: Iterable[FakeTransport], must_contain: bytes | None = None) -> None:
    """Every connection's response must be a 200 (holding ``must_contain``, if given): a
    benchmark of error answers measures the wrong path. The message shows the start of the
    response (no request, no token)."""
    for transport in transports:
        buf = transport.buf
        if buf[9:12] != b"200" or (must_contain is not None and must_contain not in buf):
            head = bytes(buf[:400]).decode("latin-1")
            wanted = "a 200" if must_contain is None else f"a 200 with {must_contain.decode()}"
            raise MeasureError(f"a response was not {wanted}:\n{head}")


RequestShape = Callable[[str], tuple[str, str, dict[str, str], str]]


def request_shape(scenario: str) -> RequestShape:
    """token -> (method, path, headers, body) of one request of ``scenario``."""
    if scenario in ("baseline", "introspect"):
        headers = scenarios.introspection_headers(SEED)
        path = baseline.PATH if scenario == "baseline" else "/oauth/introspect"
        return lambda token: ("POST", path, headers, f"token={token}")
    if scenario == "verify":
        return lambda token: (
            "GET",
            "/auth/verify",
            {"Authorization": f"Bearer {token}", "X-Original-URI": "/mcp"},
            "",
        )
    if scenario == "refresh":
        headers = {"Content-Type": scenarios.FORM}
        return lambda token: (
            "POST",
            "/oauth/token",
            headers,
            f"grant_type=refresh_token&client_id={configs.CLIENT_ID}&refresh_token={token}",
        )
    raise ValueError(f"unknown scenario {scenario!r}")


def raw_request(shape: RequestShape, token: str) -> bytes:
    """One HTTP/1.1 request as a client puts it on the wire (built per request, in the
    measured rounds, as the team's earlier figures were)."""
    method, path, headers, body = shape(token)
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1:8000"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


class Rig:
    """The app behind CONNECTIONS fake connections, one request each per round."""

    def __init__(
        self,
        server: web.Server,
        shape: RequestShape,
        tokens: Iterator[str],
        must_contain: bytes | None = None,
    ) -> None:
        self._responses = Responses()
        self._shape = shape
        self._tokens = tokens
        self._must_contain = must_contain
        self.answered = 0
        self.connections: list[tuple[RequestHandler, FakeTransport]] = []
        for _ in range(CONNECTIONS):
            protocol = server()
            transport = FakeTransport(self._responses)
            protocol.connection_made(transport)
            self.connections.append((protocol, transport))

    async def round(self, *, strict: bool = False) -> None:
        """One request on every connection; every answer a 200. ``strict`` (the warm-up):
        also ``must_contain`` — a search through each response that the measured rounds
        leave out, so that they measure what the team's earlier figures did."""
        done = self._responses.expect(CONNECTIONS)
        for protocol, transport in self.connections:
            transport.buf.clear()
            protocol.data_received(raw_request(self._shape, next(self._tokens)))
        await done
        # Let what the handlers still do after their first write finish (e.g. a body
        # written separately, the access log) before the answers are checked.
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        check_answers(
            (transport for _, transport in self.connections),
            self._must_contain if strict else None,
        )
        self.answered += CONNECTIONS

    def close(self) -> None:
        for protocol, _ in self.connections:
            protocol.connection_lost(None)


def _tokens(opts: Options, pool: list[str]) -> Iterator[str]:
    if opts.scenario != "refresh":
        return itertools.cycle(pool)
    needed = (WARMUP_ROUNDS + opts.measured_rounds) * CONNECTIONS
    if len(pool) < needed:  # seeding makes enough; this guards against a change there
        raise MeasureError(f"refresh needs {needed} refresh tokens, {len(pool)} were seeded")
    return iter(pool)


async def _seeded_app(
    opts: Options, work: Path, log_stream: IO[str]
) -> tuple[web.Application, list[str]]:
    """The daemon's app on freshly seeded storage, and the token pool the scenario uses."""
    # Imported here: the baseline runs without the daemon's modules loaded.
    from argon2 import PasswordHasher

    from mcp_oauthd.app import create_app
    from mcp_oauthd.config.loader import load_config
    from mcp_oauthd.observability.logging import configure_logging
    from mcp_oauthd.storage import build_storage

    data = configs.daemon_config(
        backend=opts.backend,
        port=8000,
        seed=SEED,
        password_hash=PasswordHasher().hash("x"),
        sqlite_path=str(work / "state.db"),
    )
    # Through a YAML file and the loader, as the daemon reads its config.
    (work / "config.yaml").write_text(yaml.safe_dump(data))
    config = load_config(work / "config.yaml")
    configure_logging(config.logging, stream=log_stream)
    storage = build_storage(config.storage)
    grants = opts.grants
    if opts.scenario == "refresh":
        grants = max(grants, (WARMUP_ROUNDS + opts.measured_rounds) * CONNECTIONS)
    spec = SeedSpec(
        salt=SEED,
        now=time.time(),
        grants=grants,
        codes=0,
        access_pool=opts.access_pool,
        client_id=configs.CLIENT_ID,
        resource=configs.RESOURCE,
    )
    await seed(storage, config, spec, work)
    if storage.name != "memory":
        # As the daemon: seeding's connection is closed, the app opens its own.
        await storage.close()
        storage = build_storage(config.storage)
    pool = "refresh.txt" if opts.scenario == "refresh" else "access.txt"
    return create_app(config, storage=storage), (work / pool).read_text().split()


@asynccontextmanager
async def serving(opts: Options, work: Path, log_stream: IO[str]) -> AsyncIterator[Rig]:
    """The app of ``opts.scenario`` served on fake connections, warmed up."""
    if opts.scenario == "baseline":
        app, pool = baseline.build_app(), BASELINE_TOKENS
    else:
        app, pool = await _seeded_app(opts, work, log_stream)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        server = runner.server
        assert server is not None  # set by setup()
        if opts.scenario != "baseline" and opts.lane:
            from mcp_oauthd.http.middleware import install_hot_lane

            install_hot_lane(app, server)
        must_contain = ACTIVE if opts.scenario == "introspect" else None
        rig = Rig(server, request_shape(opts.scenario), _tokens(opts, pool), must_contain)
        try:
            for _ in range(WARMUP_ROUNDS):
                await rig.round(strict=True)
            yield rig
        finally:
            rig.close()
    finally:
        await runner.cleanup()


def _devnull() -> IO[str]:
    # Line-buffered like the daemon's stderr on a file; never closed (logging keeps it).
    return open(os.devnull, "w", buffering=1, encoding="utf-8")


# ----------------------------------------------------------------------------- CPU
async def measure_cpu(
    opts: Options, *, log_stream: IO[str] | None = None, profile_out: IO[str] | None = None
) -> CpuResult:
    """CPU microseconds per request: the minimum and median over BLOCKS blocks."""
    per = opts.rounds_per_block
    with tempfile.TemporaryDirectory(prefix="bench-inproc-") as tmp:
        logs = _devnull() if log_stream is None else log_stream
        async with serving(opts, Path(tmp), logs) as rig:
            profiler = cProfile.Profile() if opts.profile else None
            if profiler is not None:
                profiler.enable()
            blocks = []
            for _ in range(BLOCKS):
                started = time.process_time()
                for _ in range(per):
                    await rig.round()
                blocks.append((time.process_time() - started) / (per * CONNECTIONS))
            if profiler is not None:
                profiler.disable()
                stats = pstats.Stats(profiler, stream=profile_out or sys.stdout)
                stats.sort_stats(opts.profile or "tottime").print_stats(PROFILE_LINES)
            answered = rig.answered
    return CpuResult(
        opts,
        requests=per * BLOCKS * CONNECTIONS,
        answered=answered,
        min_us=min(blocks) * 1e6,
        median_us=statistics.median(blocks) * 1e6,
    )


# ----------------------------------------------------------------------------- callgrind
def callgrind_total(lines: Iterable[str]) -> int:
    """The events (the first one: instructions) one callgrind output file counted.

    A file states its total as ``totals:`` and/or ``summary:`` (the same figure: which
    lines appear depends on the valgrind version), so the largest is taken, never the sum.
    """
    total = 0
    for line in lines:
        if line.startswith(("summary:", "totals:")):
            fields = line.split(":", 1)[1].split()
            if fields:
                total = max(total, int(fields[0]))
    return total


def _instrumentation(state: str) -> None:
    """Switch callgrind's instrumentation of this process ``on`` or ``off``."""
    done = subprocess.run(
        ["callgrind_control", "-i", state, str(os.getpid())],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise MeasureError(f"callgrind_control -i {state} failed: {done.stderr.strip()}")


async def count_in_child(opts: Options) -> int:
    """Under valgrind: warm up uncounted, count the measured rounds; the requests counted."""
    with tempfile.TemporaryDirectory(prefix="bench-inproc-") as tmp:
        async with serving(opts, Path(tmp), _devnull()) as rig:
            _instrumentation("on")
            for _ in range(opts.measured_rounds):
                await rig.round()
            _instrumentation("off")
    return opts.measured_rounds * CONNECTIONS


def child_args(opts: Options) -> list[str]:
    """The command-line arguments that make the child measure what ``opts`` asks."""
    args = [
        opts.scenario,
        "--backend",
        opts.backend,
        "--requests",
        str(opts.requests),
        "--grants",
        str(opts.grants),
        "--access-pool",
        str(opts.access_pool),
    ]
    if not opts.lane:
        args.append("--no-lane")
    return args


def measure_callgrind(opts: Options) -> CountResult:
    """Instructions per request: this module again, under callgrind."""
    missing = [tool for tool in CALLGRIND_TOOLS if shutil.which(tool) is None]
    if missing:
        raise ToolMissing(f"--callgrind needs {' and '.join(missing)} (Debian package: valgrind)")
    with tempfile.TemporaryDirectory(prefix="bench-inproc-cg-") as tmp:
        out_dir = Path(tmp)
        result = out_dir / "result.json"
        command = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out_dir / 'callgrind.out.%p'}",
            sys.executable,
            "-m",
            "bench.inproc",
            *child_args(opts),
            "--callgrind-child",
            str(result),
        ]
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not result.exists():
            # Python's own lines, not valgrind's "==pid==" chatter.
            ours = [line for line in done.stderr.splitlines() if not line.startswith("==")]
            raise MeasureError(
                f"the run under callgrind failed (exit {done.returncode}):\n"
                + "\n".join(ours[-20:])
            )
        requests = int(json.loads(result.read_text())["requests"])
        instructions = 0
        for path in out_dir.glob("callgrind.out.*"):
            with path.open(encoding="utf-8", errors="replace") as lines:
                instructions += callgrind_total(lines)
    if instructions <= 0:
        raise MeasureError("callgrind counted no instructions (was instrumentation switched on?)")
    return CountResult(opts, requests=requests, instructions=instructions)


# ----------------------------------------------------------------------------- CLI
def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.inproc",
        description="The app's own cost per request, in process (see the module docstring).",
    )
    parser.add_argument("scenario", choices=SCENARIOS)
    parser.add_argument("--backend", choices=BACKENDS, default="memory")
    parser.add_argument(
        "--requests",
        type=_positive,
        help=f"requests to measure, in rounds of {CONNECTIONS} (default: "
        f"{DEFAULT_REQUESTS:,}; with --callgrind {DEFAULT_CALLGRIND_REQUESTS:,})",
    )
    parser.add_argument(
        "--grants",
        type=_positive,
        default=DEFAULT_GRANTS,
        help="grants seeded (refresh: at least one per request, warm-up included)",
    )
    parser.add_argument(
        "--access-pool",
        type=_positive,
        default=DEFAULT_ACCESS_POOL,
        help="distinct access tokens the requests cycle through",
    )
    parser.add_argument(
        "--no-lane",
        dest="lane",
        action="store_false",
        help="do not install the hot lane (measures its gain: compare with a normal run)",
    )
    parser.add_argument(
        "--callgrind", action="store_true", help="count instructions under valgrind"
    )
    parser.add_argument(
        "--profile",
        choices=PROFILE_KEYS,
        metavar="SORTKEY",
        help="print a cProfile table (top 40) of the measured rounds, sorted by tottime or cumtime",
    )
    # The run under valgrind: where to write how many requests were counted.
    parser.add_argument("--callgrind-child", type=Path, help=argparse.SUPPRESS)
    return parser


def parse(argv: Sequence[str] | None = None) -> tuple[Options, Path | None]:
    """The options, and the result file when this is the child run under callgrind."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.callgrind and args.profile:
        parser.error("--profile and --callgrind measure different things: pick one")
    child: Path | None = args.callgrind_child
    counting = args.callgrind or child is not None
    requests = args.requests or (DEFAULT_CALLGRIND_REQUESTS if counting else DEFAULT_REQUESTS)
    if requests < CONNECTIONS:
        parser.error(f"--requests must be at least {CONNECTIONS} (one round)")
    opts = Options(
        scenario=args.scenario,
        backend=args.backend,
        requests=requests,
        grants=args.grants,
        access_pool=args.access_pool,
        lane=args.lane,
        callgrind=counting,
        profile=args.profile,
    )
    return opts, child


def main(argv: Sequence[str] | None = None) -> int:
    opts, child = parse(argv)
    try:
        if child is not None:
            requests = asyncio.run(count_in_child(opts))
            child.write_text(json.dumps({"requests": requests}))
            return 0
        if opts.callgrind:
            print(measure_callgrind(opts).line())
        else:
            print(asyncio.run(measure_cpu(opts)).line())
    except ToolMissing as exc:
        print(f"bench.inproc: {exc}", file=sys.stderr)
        return 2
    except MeasureError as exc:
        print(f"bench.inproc: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The benchmark run: processes, seeding, load, measurements, report.

    python -m bench [options]        (bench/run also installs wrk and the venv)

See ``bench/README.md`` for what is measured and how to read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from argon2 import PasswordHasher

from bench import configs, lua, procs, profiling, report, wrk
from bench.options import Options, parse, pool_for, scenarios_for
from bench.report import TARGET_CONNECTIONS, Measurement
from bench.scenarios import Scenario, all_scenarios, baseline_scenario, fill, scenario_named
from bench.seeding import SeedSpec, token_value
from mcp_oauthd.oauth.tokens import ACCESS_PREFIX
from mcp_oauthd.testing import flow
from mcp_oauthd.testing.redis_server import PrivateRedis, redis_answers

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
FLOW_REDIRECT = "http://127.0.0.1:5555/callback"
#: Logins through the real HTTP flow per daemon (argon2 makes each one slow on purpose).
FLOW_LOGINS = 2
#: Small state of the state-size comparison, and the access tokens it cycles through.
SMALL_STATE = 1_000
#: Runs on each side of an alternated comparison: the daemon against the baseline at the
#: targets' connection count (``Bench.paired``), the daemon against itself with more
#: workers or more state (``Bench.alternated_intro``).
ALTERNATIONS = 4


@dataclass
class Daemon:
    label: str
    backend: str
    token_format: str
    workers: int
    url: str
    proc: procs.Proc
    pools: Path
    seed_report: dict[str, Any]
    spawn_to_ready_ms: float


class SkipError(Exception):
    """A scenario or daemon that cannot run here (said in the report, not an error)."""


class Bench:
    def __init__(self, opts: Options, tmp: Path) -> None:
        self.opts = opts
        self.tmp = tmp
        self.seed = secrets.token_hex(6)
        self.password = "bench-" + secrets.token_urlsafe(12)
        self.password_hash = PasswordHasher().hash(self.password)
        self.baselines: list[Measurement] = []
        self.baseline_samples: list[Measurement] = []  # every baseline load, for the spread
        self.baseline: tuple[str, Path] | None = None
        self.baseline_pid: int | None = None
        self.measurements: list[Measurement] = []
        self.extras: dict[str, Any] = {"notes": []}
        self.profiles: list[dict[str, Any]] = []
        self.redis: PrivateRedis | None = None
        self.redis_url: str | None = opts.redis_url
        self.redis_prefixes: list[str] = []
        self.running: list[procs.Proc] = []
        self.started = time.monotonic()
        self.scripts: dict[str, Path] = {}
        self.load_before = _loadavg()

    # ------------------------------------------------------------------ plumbing
    def log(self, message: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[bench {elapsed:6.0f}s] {message}", file=sys.stderr, flush=True)

    def note(self, message: str) -> None:
        self.extras["notes"].append(message)
        self.log("note: " + message)

    def script(self, scenario: Scenario) -> Path:
        if scenario.name not in self.scripts:
            path = self.tmp / f"{scenario.name}.lua"
            path.write_text(
                lua.generate(
                    name=scenario.name,
                    method=scenario.method,
                    path=scenario.path,
                    headers=scenario.headers,
                    body=scenario.body,
                )
            )
            self.scripts[scenario.name] = path
        return self.scripts[scenario.name]

    def load(
        self,
        url: str,
        scenario: Scenario,
        pools: Path | None,
        *,
        connections: int,
        duration: float,
        start: int = 0,
        timeout: float | None = None,
        threads: int | None = None,
        pid: int | None = None,
    ) -> tuple[wrk.WrkResult, int]:
        """Load ``url`` with wrk; with ``pid`` (the one server process) also record the
        CPU time it spent (``WrkResult.cpu_us_per_request``)."""
        pool = pools / f"{scenario.pool}.txt" if pools is not None and scenario.pool else None
        args = wrk.command(
            url + scenario.path,
            self.script(scenario),
            connections=connections,
            threads=threads or self.opts.threads,
            duration=duration,
            timeout=timeout or self.opts.timeout,
            pool=pool,
            start=start,
            once=scenario.once,
        )
        cpu_before = procs.cpu_seconds(pid) if pid is not None else None
        result = wrk.run(args, wall_timeout=duration + 120)
        if pid is not None and cpu_before is not None:
            result = dataclasses.replace(result, server_cpu_s=procs.cpu_seconds(pid) - cpu_before)
        return result, (wrk.next_start(start, result) if scenario.once else start)

    # ------------------------------------------------------------------ processes
    def start_redis(self) -> None:
        if self.redis_url is not None:
            return
        try:
            self.redis = PrivateRedis()
            self.redis.start()
            self.redis_url = self.redis.url
            self.log(f"private redis-server on port {self.redis.port}")
        except FileNotFoundError:
            self.redis = None
            if redis_answers():
                self.redis_url = "redis://127.0.0.1:6379/0"
                self.log("redis-server not installed; using the Redis on 127.0.0.1:6379")
            else:
                raise SkipError("no redis-server and no --redis-url: redis skipped") from None

    def start_daemon(
        self,
        backend: str,
        label: str,
        *,
        token_format: str = "opaque",
        workers: int = 1,
        grants: int = 0,
        codes: int = 0,
        access_pool: int = 0,
        seed: bool = True,
    ) -> Daemon:
        port = procs.free_port()
        where = self.tmp / label
        where.mkdir(parents=True, exist_ok=True)
        prefix = f"mcp-oauthd-bench-{self.seed}-{label}:"
        if backend == "redis":
            self.start_redis()
            self.redis_prefixes.append(prefix)
        config = configs.daemon_config(
            backend=backend,
            port=port,
            seed=self.seed,
            password_hash=self.password_hash,
            token_format=token_format,
            workers=workers,
            sqlite_path=str(where / "state.db"),
            redis_url=self.redis_url,
            redis_prefix=prefix,
        )
        config_path = where / "config.yaml"
        config_path.write_text(yaml.safe_dump(config))
        if seed:
            spec = SeedSpec(
                salt=f"{self.seed}-{label}",
                now=time.time(),
                grants=grants,
                codes=codes,
                access_pool=access_pool,
                client_id=configs.CLIENT_ID,
                resource=configs.RESOURCE,
                redirect_uri=FLOW_REDIRECT,
            )
            (where / "seed.json").write_text(spec.to_json())
            cmd = [
                sys.executable,
                "-m",
                "bench.daemon",
                "--config",
                str(config_path),
                "--seed",
                str(where / "seed.json"),
                "--pools",
                str(where / "pools"),
                "--report",
                str(where / "seed-report.json"),
            ]
        else:
            cmd = [sys.executable, "-m", "mcp_oauthd", "serve", "--config", str(config_path)]
        url = f"http://127.0.0.1:{port}"
        self.log(
            f"starting {label}: {backend}, {token_format}, {workers} worker(s), "
            f"{grants:,} grants, {codes:,} codes"
        )
        proc = procs.spawn(cmd, where / "daemon.log", cwd=ROOT)
        self.running.append(proc)
        ready_ms = procs.wait_ready(proc, url + "/readyz", timeout=300 + (grants + codes) / 2000)
        procs.wait_for_event(proc.log_path, "ready", count=workers)
        seed_report: dict[str, Any] = {}
        if seed and (where / "seed-report.json").exists():
            seed_report = json.loads((where / "seed-report.json").read_text())
            if seed_report.get("grants") or seed_report.get("codes"):
                self.log(
                    f"seeded {seed_report['grants']:,} grants + {seed_report['codes']:,} codes "
                    f"({seed_report['method']}) in {seed_report['seconds']} s"
                )
        return Daemon(
            label, backend, token_format, workers, url, proc, where / "pools", seed_report, ready_ms
        )

    def stop(self, proc: procs.Proc) -> None:
        procs.stop(proc)
        if proc in self.running:
            self.running.remove(proc)

    @contextlib.contextmanager
    def daemon(self, backend: str, label: str, **kwargs: Any) -> Iterator[Daemon]:
        d = self.start_daemon(backend, label, **kwargs)
        try:
            yield d
        finally:
            self.stop(d.proc)

    def cleanup(self) -> None:
        for proc in list(self.running):
            self.stop(proc)
        if self.redis is not None:
            self.redis.stop()
        elif self.redis_url is not None and self.redis_prefixes:
            asyncio.run(_delete_prefixes(self.redis_url, self.redis_prefixes))

    # ------------------------------------------------------------------ checks
    def first_value(self, pools: Path, scenario: Scenario) -> str:
        if scenario.pool is None:
            return ""
        with (pools / f"{scenario.pool}.txt").open() as handle:
            return handle.readline().strip()

    def sanity(self, d: Daemon, scenario: Scenario) -> None:
        """One request exactly as wrk will send it (pool line 0): the scenario must get
        its expected answer, or the run stops before measuring errors."""
        token = self.first_value(d.pools, scenario)
        headers = {k: fill(v, token, 0, 0) for k, v in scenario.headers.items()}
        body = fill(scenario.body, token, 0, 0).encode() if scenario.body else None
        request = urllib.request.Request(
            d.url + scenario.path, data=body, headers=headers, method=scenario.method
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, text = int(response.status), response.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            status, text = int(exc.code), exc.read().decode(errors="replace")
        if status in (404, 405) and scenario.route is not None:
            raise SkipError(
                f"{scenario.route} is not served by this build: {scenario.name} skipped"
            )
        if status != scenario.expect:
            raise RuntimeError(
                f"sanity check: {scenario.name} on {d.backend} answered {status}, "
                f"expected {scenario.expect}: {text[:300]}"
            )
        if scenario.name.startswith("introspect") and json.loads(text).get("active") is not True:
            raise RuntimeError(f"sanity check: {scenario.name} on {d.backend}: token inactive")

    def http_flow(self, d: Daemon) -> None:
        """A few grants through the real HTTP flow (authorize, consent, login, callback,
        code exchange); their access tokens join the access pool and must introspect
        active like the seeded ones."""

        async def run() -> list[str]:
            tokens = []
            for _ in range(FLOW_LOGINS):
                jar = aiohttp.CookieJar(unsafe=True)
                async with aiohttp.ClientSession(cookie_jar=jar) as http:
                    body = await flow.tokens(
                        http,
                        d.url,
                        username=configs.USERNAME,
                        password=self.password,
                        client_id=configs.CLIENT_ID,
                        redirect_uri=FLOW_REDIRECT,
                    )
                    tokens.append(str(body["access_token"]))
            return tokens

        tokens = asyncio.run(run())
        access = d.pools / "access.txt"
        if access.exists():
            with access.open("a") as out:
                for token in tokens:
                    out.write(token + "\n")
        probe = scenario_named(self.seed, "introspect-opaque")
        for token in tokens:
            body = fill(probe.body, token).encode()
            request = urllib.request.Request(
                d.url + probe.path, data=body, headers=probe.headers, method="POST"
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                if json.loads(response.read()).get("active") is not True:
                    raise RuntimeError("a token from the real HTTP flow does not introspect")
        self.log(f"{len(tokens)} grants through the real HTTP flow: introspect active")

    # ------------------------------------------------------------------ measuring
    def measure(self, d: Daemon, scenario: Scenario) -> None:
        try:
            self.sanity(d, scenario)
        except SkipError as exc:
            self.note(str(exc))
            return
        offset = 1 if scenario.once else 0  # line 0 went to the sanity check
        if self.opts.warmup > 0:
            _, offset = self.load(
                d.url,
                scenario,
                d.pools,
                connections=TARGET_CONNECTIONS,
                duration=self.opts.warmup,
                start=offset,
            )
        for connections in self.opts.connections:

            def run(start: int, duration: float, c: int = connections) -> tuple[wrk.WrkResult, int]:
                return self.load(
                    d.url,
                    scenario,
                    d.pools,
                    connections=c,
                    duration=duration,
                    start=start,
                    pid=d.proc.pid if d.workers == 1 else None,
                )

            paired: float | None = None
            pairs: list[float] | None = None
            if connections == TARGET_CONNECTIONS:
                result, offset, paired, pairs = self.paired(run, connections, offset)
            else:
                result, offset = run(offset, self.opts.duration)
            note = ""
            if result.exhausted:
                note = f"pool exhausted ({result.exhausted} requests): raise --pool"
            m = _measurement(scenario.name, d.backend, connections, result, note, paired, pairs)
            self.measurements.append(m)
            ratio = report.ratio_of(m, {}) if paired else None
            cpu = ""
            if m.cpu_us is not None:
                cpu = f"  cpu {m.cpu_us:.0f} us/req"
                base_cpu = self.baseline_cpu_us(connections)
                if base_cpu is not None:
                    cpu += f" (baseline {base_cpu:.0f}: cpu ratio {base_cpu / m.cpu_us:.2f})"
            shown_pairs = f" [{' '.join(f'{r:.2f}' for r in pairs)}]" if pairs else ""
            self.log(
                f"{scenario.name:<18} {d.backend:<7} c={connections:<4} {m.rps:8.0f} req/s "
                f"p50 {m.p50_ms:.2f} ms p99 {m.p99_ms:.2f} ms errors {m.error_total}"
                + (
                    f"  ratio {ratio:.2f}{shown_pairs} (baseline {paired:.0f})"
                    if ratio is not None and paired is not None
                    else ""
                )
                + cpu
            )
        if scenario.name in self.opts.profile and d.backend == self.opts.profile_backend:
            self.profile(d, scenario, offset)

    def profile(self, d: Daemon, scenario: Scenario, offset: int) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        RESULTS.mkdir(parents=True, exist_ok=True)
        mode = "gil" if self.opts.profile_gil else "active"
        raw = RESULTS / f"profile-{d.backend}-{scenario.name}-{mode}-{stamp}.txt"
        seconds = self.opts.profile_seconds
        try:
            recorder = profiling.start_recording(
                d.proc.pid, seconds, raw, gil=self.opts.profile_gil
            )
        except RuntimeError as exc:
            self.note(f"no profile of {scenario.name}: {exc}")
            return
        try:
            result, _ = self.load(
                d.url,
                scenario,
                d.pools,
                connections=TARGET_CONNECTIONS,
                duration=seconds + 2,
                start=offset,
            )
        finally:
            _, err = recorder.communicate(timeout=seconds + 60)
        if recorder.returncode != 0 or not raw.exists():
            self.note(f"py-spy failed on {scenario.name}: {err.decode(errors='replace')[-300:]}")
            return
        summary = profiling.summarize(raw.read_text())
        text = summary.format()
        (raw.with_suffix(".summary.txt")).write_text(text + "\n")
        self.profiles.append(
            {
                "scenario": scenario.name,
                "backend": d.backend,
                "mode": mode,
                "rps_while_profiling": round(result.rps, 1),
                "raw": str(raw.relative_to(ROOT)),
                "categories": summary.categories,
                "self_top": summary.self_top[:25],
                "inclusive_top": summary.inclusive_top[:40],
            }
        )
        self.log(f"profile of {scenario.name} on {d.backend} -> {raw.relative_to(ROOT)}\n{text}")

    def start_baseline(self) -> None:
        """The bare aiohttp baseline runs for the whole run (idle between measurements)."""
        port = procs.free_port()
        where = self.tmp / "baseline"
        pools = where / "pools"
        pools.mkdir(parents=True, exist_ok=True)
        with (pools / "access.txt").open("w") as out:
            for i in range(self.opts.access_pool):
                out.write(token_value(ACCESS_PREFIX, self.seed, i) + "\n")
        cmd = [sys.executable, "-m", "bench.baseline", "--port", str(port)]
        proc = procs.spawn(cmd, where / "baseline.log", cwd=ROOT)
        self.running.append(proc)
        self.baseline_pid = proc.pid
        url = f"http://127.0.0.1:{port}"
        procs.wait_ready(proc, url + "/readyz", timeout=60)
        self.baseline = (url, pools)

    def baseline_load(self, connections: int, duration: float) -> wrk.WrkResult:
        if self.baseline is None:
            raise RuntimeError("the baseline is not running")
        url, pools = self.baseline
        result, _ = self.load(
            url,
            baseline_scenario(self.seed),
            pools,
            connections=connections,
            duration=duration,
            pid=self.baseline_pid,
        )
        self.baseline_samples.append(_measurement("baseline", "aiohttp", connections, result))
        return result

    def baseline_cpu_us(self, connections: int) -> float | None:
        """The baseline's mean server CPU per request at ``connections`` so far."""
        values = [
            s.cpu_us
            for s in self.baseline_samples
            if s.connections == connections and s.cpu_us is not None
        ]
        return sum(values) / len(values) if values else None

    def run_baseline(self, when: str) -> None:
        if self.opts.warmup > 0:
            self.baseline_load(TARGET_CONNECTIONS, self.opts.warmup)
            self.baseline_samples.pop()  # a warm-up is not a sample
        for connections in self.opts.connections:
            result = self.baseline_load(connections, self.opts.duration)
            m = _measurement("baseline", "aiohttp", connections, result, when)
            self.baselines.append(m)
            self.log(
                f"baseline ({when}) c={connections:<4} {m.rps:8.0f} req/s "
                f"p50 {m.p50_ms:.2f} ms p99 {m.p99_ms:.2f} ms"
            )

    def paired(
        self,
        run: Callable[[int, float], tuple[wrk.WrkResult, int]],
        connections: int,
        start: int,
    ) -> tuple[wrk.WrkResult, int, float, list[float]]:
        """The measurement at the targets' connection count, in ``ALTERNATIONS`` runs of
        the daemon alternating with the baseline's: B D B D ... D B, together as long as
        one measurement (fewer runs when it is shorter than ``ALTERNATIONS`` seconds).
        Returns the daemon's runs as one result, the next pool start, the baselines' mean
        req/s, and each run's req/s over the mean of the baseline runs on either side of
        it (the reported ratio is their median).

        Why: on this shared host the speed of the machine changes within seconds. Two
        identical baseline servers measured 2 s apart, eight times, read 0.71 to 1.21 of
        each other; one daemon run between two baseline halves (as before) inherited all
        of that in its one ratio. The median of several pairs, each measured within
        seconds, does not hang on one unlucky second."""
        # wrk runs whole seconds: a short measurement (--quick) makes fewer pairs.
        pairs = max(1, min(ALTERNATIONS, int(self.opts.duration)))
        piece = self.opts.duration / pairs
        baselines = [self.baseline_load(connections, piece).rps]
        runs: list[wrk.WrkResult] = []
        for _ in range(pairs):
            result, start = run(start, piece)
            runs.append(result)
            baselines.append(self.baseline_load(connections, piece).rps)
        ratios = [
            r.rps / ((before + after) / 2) if before + after > 0 else 0.0
            for r, before, after in zip(runs, baselines, baselines[1:], strict=False)
        ]
        return wrk.merged(runs), start, statistics.mean(baselines), ratios

    def run_backend(self, backend: str) -> None:
        names = scenarios_for(self.opts, backend)
        chosen = [s for s in all_scenarios(self.seed) if s.name in names]
        for token_format in ("opaque", "jwt"):
            scenarios = [s for s in chosen if s.token_format == token_format]
            if not scenarios:
                continue
            single_use = any(s.once for s in scenarios)
            pool = pool_for(self.opts, backend)
            grants = pool if single_use else self.opts.access_pool
            if token_format == "jwt":
                grants = self.opts.jwt_grants
            codes = pool if any(s.pool == "codes" for s in scenarios) else 0
            try:
                d = self.start_daemon(
                    backend,
                    f"{backend}-{token_format}",
                    token_format=token_format,
                    grants=grants,
                    codes=codes,
                    access_pool=self.opts.access_pool,
                )
            except RuntimeError as exc:
                if token_format == "jwt":
                    self.note(f"JWT daemon on {backend} did not start (JWT not in place?): {exc}")
                    continue
                raise
            try:
                self.http_flow(d)
                for scenario in scenarios:
                    self.measure(d, scenario)
            finally:
                self.stop(d.proc)

    # ------------------------------------------------------------------ extras
    def alternated_intro(self, daemons: list[Daemon]) -> list[list[float]]:
        """Opaque introspection req/s on each of ``daemons`` in turn (A B A B ...),
        ``ALTERNATIONS`` runs each of half the measurement time; one list per daemon.

        For the comparisons of the daemon with itself (two workers vs one, more state vs
        less): both sides are measured seconds apart, again and again, so a change in the
        machine's speed (on this shared host it comes and goes within seconds) hits both
        alike, and no baseline enters the ratio. Each side divided by a baseline of its
        own let the baseline's noise in: in one run the daemon's req/s moved 2% between
        the sides and the baselines around them 18%."""
        scenario = scenario_named(self.seed, "introspect-opaque")
        for d in daemons:
            self.sanity(d, scenario)
            if self.opts.warmup > 0:
                self.load(
                    d.url,
                    scenario,
                    d.pools,
                    connections=TARGET_CONNECTIONS,
                    duration=self.opts.warmup,
                )
        rps: list[list[float]] = [[] for _ in daemons]
        for _ in range(ALTERNATIONS):
            for side, d in zip(rps, daemons, strict=True):
                result, _ = self.load(
                    d.url,
                    scenario,
                    d.pools,
                    connections=TARGET_CONNECTIONS,
                    duration=max(1.0, self.opts.duration / 2),
                )
                if result.errors:
                    self.note(f"{d.label}: {result.errors} errors {result.error_counts()}")
                side.append(result.rps)
        return rps

    def extra_startup(self) -> None:
        found = []
        for backend in self.opts.backends:
            try:
                d = self.start_daemon(backend, f"startup-{backend}", seed=False)
            except SkipError as exc:
                self.note(str(exc))
                continue
            try:
                ready = procs.log_events(d.proc.log_path, "ready")
                found.append(
                    {
                        "backend": backend,
                        "startup_ms": float(ready[0]["startup_ms"]) if ready else float("nan"),
                        "spawn_to_ready_ms": round(d.spawn_to_ready_ms, 1),
                        "rss_mb": round(procs.rss_mb(d.proc.pid), 1),
                    }
                )
            finally:
                self.stop(d.proc)
        self.extras["startup"] = found

    def extra_workers(self) -> None:
        with contextlib.ExitStack() as stack:
            daemons = [
                stack.enter_context(
                    self.daemon(
                        "sqlite",
                        f"workers-{workers}",
                        workers=workers,
                        grants=self.opts.access_pool,
                        access_pool=self.opts.access_pool,
                    )
                )
                for workers in (1, 2)
            ]
            one, two = self.alternated_intro(daemons)
        rounds = compared(one, two)
        self.log(
            f"introspect-opaque sqlite, 1 vs 2 workers, {ALTERNATIONS} alternating runs: "
            f"{statistics.median(one):.0f} -> {statistics.median(two):.0f} req/s "
            f"(per pair {', '.join(f'{r:.2f}x' for r in rounds)})"
        )
        self.extras["workers"] = {
            "scenario": "introspect-opaque",
            "connections": TARGET_CONNECTIONS,
            "one": round(statistics.median(one), 1),
            "two": round(statistics.median(two), 1),
            "ratio": round(statistics.median(rounds), 3),
            "rounds": [round(r, 3) for r in rounds],
        }

    def extra_state(self) -> None:
        found = []
        for backend in self.opts.state_backends:
            large = self.opts.state_grants
            try:
                with contextlib.ExitStack() as stack:
                    daemons = [
                        stack.enter_context(
                            self.daemon(
                                backend,
                                f"state-{backend}-{size}",
                                grants=size,
                                access_pool=SMALL_STATE,
                            )
                        )
                        for size in (SMALL_STATE, large)
                    ]
                    if backend == "memory" and large == self.opts.rss_grants:
                        self.record_rss(daemons[1], large)
                    small_rps, large_rps = self.alternated_intro(daemons)
            except SkipError as exc:
                self.note(str(exc))
                continue
            rounds = compared(small_rps, large_rps)
            self.log(
                f"introspect-opaque {backend}, {SMALL_STATE:,} vs {large:,} grants, "
                f"{ALTERNATIONS} alternating runs: {statistics.median(small_rps):.0f} vs "
                f"{statistics.median(large_rps):.0f} req/s "
                f"(per pair {', '.join(f'{r:.2f}' for r in rounds)})"
            )
            found.append(
                {
                    "backend": backend,
                    "small": SMALL_STATE,
                    "large": large,
                    "small_rps": round(statistics.median(small_rps), 1),
                    "large_rps": round(statistics.median(large_rps), 1),
                    "ratio": round(statistics.median(rounds), 3),
                    "rounds": [round(r, 3) for r in rounds],
                }
            )
        self.extras["state"] = found

    def record_rss(self, d: Daemon, grants: int) -> None:
        empty = next(
            (s["rss_mb"] for s in self.extras.get("startup", []) if s["backend"] == "memory"),
            None,
        )
        if empty is None:
            with self.daemon("memory", "rss-empty", seed=False) as e:
                empty = procs.rss_mb(e.proc.pid)
        rss = procs.rss_mb(d.proc.pid)
        self.extras["rss"] = {
            "grants": grants,
            "rss_mb": round(rss, 1),
            "empty_mb": round(empty, 1),
            "bytes_per_grant": round((rss - empty) * 1024 * 1024 / grants, 0),
        }
        self.log(f"RSS with {grants:,} grants in memory storage: {rss:.0f} MB (empty {empty:.0f})")

    def extra_rss(self) -> None:
        if "rss" in self.extras:
            return
        with self.daemon("memory", "rss", grants=self.opts.rss_grants, access_pool=100) as d:
            self.record_rss(d, self.opts.rss_grants)

    def extra_c10k(self) -> None:
        connections = self.opts.c10k_connections
        limit = procs.raise_open_files(connections + 1024)
        if limit < connections + 100:
            self.note(f"open files limited to {limit}: c10k test skipped (raise ulimit -n)")
            return
        somaxconn = _read_int("/proc/sys/net/core/somaxconn")
        scenario = scenario_named(self.seed, "introspect-opaque")
        with self.daemon(
            "memory", "c10k", grants=self.opts.access_pool, access_pool=self.opts.access_pool
        ) as d:
            self.sanity(d, scenario)
            result, _ = self.load(
                d.url,
                scenario,
                d.pools,
                connections=connections,
                duration=self.opts.c10k_duration,
                timeout=60,
            )
        errors = result.error_counts()
        self.extras["c10k"] = {
            "scenario": scenario.name,
            "backend": "memory",
            "connections": connections,
            "rps": round(result.rps, 1),
            "p50_ms": round(result.p50_ms, 1),
            "p99_ms": round(result.p99_ms, 1),
            "errors": errors,
            "errors_total": result.errors,
            "somaxconn": somaxconn,
            "open_files_limit": limit,
        }
        self.log(f"c10k: {result.rps:.0f} req/s, errors {errors}, somaxconn {somaxconn}")

    # ------------------------------------------------------------------ the run
    def run(self) -> None:
        opts = self.opts
        self.start_baseline()
        self.run_baseline("start")
        for backend in opts.backends:
            try:
                self.run_backend(backend)
            except SkipError as exc:
                self.note(str(exc))
        extras = [
            ("startup", self.extra_startup),
            ("workers", self.extra_workers),
            ("state", self.extra_state),
            ("rss", self.extra_rss),
            ("c10k", self.extra_c10k),
        ]
        for name, step in extras:
            if name not in opts.extras:
                continue
            if name == "workers" and "sqlite" not in opts.backends:
                continue
            try:
                step()
            except SkipError as exc:
                self.note(str(exc))

    def meta(self) -> dict[str, Any]:
        options = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self.opts).items()}
        return {
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "git": _git_revision(),
            "python": platform.python_version(),
            "aiohttp": aiohttp.__version__,
            "wrk": _wrk_version(),
            "cpus": os.cpu_count(),
            "loadavg_before": self.load_before,
            "loadavg_after": _loadavg(),
            "elapsed_s": round(time.monotonic() - self.started, 1),
            "options": options,
        }


def compared(before: list[float], after: list[float]) -> list[float]:
    """Each run of ``after`` divided by the run of ``before`` just ahead of it."""
    return [b / a if a else 0.0 for a, b in zip(before, after, strict=True)]


def _measurement(
    scenario: str,
    backend: str,
    connections: int,
    result: wrk.WrkResult,
    note: str = "",
    paired: float | None = None,
    pairs: list[float] | None = None,
) -> Measurement:
    return Measurement(
        scenario=scenario,
        backend=backend,
        connections=connections,
        rps=round(result.rps, 1),
        p50_ms=round(result.p50_ms, 3),
        p99_ms=round(result.p99_ms, 3),
        requests=result.requests,
        duration_s=round(result.duration_s, 2),
        errors=result.error_counts(),
        note=note,
        paired_baseline_rps=None if paired is None else round(paired, 1),
        cpu_us=None if result.cpu_us_per_request is None else round(result.cpu_us_per_request, 1),
        pair_ratios=None if pairs is None else [round(r, 3) for r in pairs],
    )


async def _delete_prefixes(url: str, prefixes: list[str]) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:
        for prefix in prefixes:
            batch = []
            async for key in client.scan_iter(match=prefix.replace("*", r"\*") + "*", count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    await client.delete(*batch)
                    batch = []
            if batch:
                await client.delete(*batch)
    finally:
        await client.aclose()


def _loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def _read_int(path: str) -> int | None:
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _git_revision() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def _wrk_version() -> str | None:
    try:
        done = subprocess.run(
            [wrk.wrk_binary(), "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, wrk.WrkError, subprocess.TimeoutExpired):
        return None
    return (
        (done.stdout or done.stderr).splitlines()[0].strip()
        if (done.stdout or done.stderr)
        else None
    )


def estimate_seconds(opts: Options) -> float:
    """A rough duration of the run (pure): load time plus start-up and seeding."""
    # The baseline runs around the daemon's at the targets' count, and wrk's start-ups.
    paired = (
        opts.duration * (ALTERNATIONS + 1) / ALTERNATIONS + ALTERNATIONS
        if TARGET_CONNECTIONS in opts.connections
        else 0.0
    )
    per_scenario = opts.warmup + opts.duration * len(opts.connections) + paired + 1.5
    scenarios = sum(len(scenarios_for(opts, b)) for b in opts.backends)
    daemons = len(opts.backends) * 2
    total = per_scenario * scenarios + daemons * 5
    total += sum(pool_for(opts, b) / (2_000 if b == "redis" else 10_000) for b in opts.backends)
    total += 5 + opts.warmup + opts.duration * len(opts.connections) + 2  # the baseline
    measured = opts.warmup + 2 * opts.duration + 8  # a paired extra, with a daemon start
    extras = set(opts.extras)
    if "workers" in extras:
        total += 2 * measured
    if "state" in extras:
        total += len(opts.state_backends) * 2 * measured
        total += opts.state_grants / 10_000 * len(opts.state_backends)
    if "c10k" in extras:
        total += opts.c10k_duration + 10
    if "startup" in extras:
        total += 5 * len(opts.backends)
    return total


def main(argv: list[str] | None = None) -> int:
    opts = parse(argv)
    try:
        wrk.wrk_binary()
    except wrk.WrkError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    procs.raise_open_files(max(65_536, opts.c10k_connections + 1024))
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="mcp-oauthd-bench-"))
    bench = Bench(opts, tmp)
    bench.log(
        f"about {estimate_seconds(opts) / 60:.0f} min; backends {','.join(opts.backends)}; "
        f"c={','.join(map(str, opts.connections))}; warm-up {opts.warmup:g}s, "
        f"{opts.duration:g}s per measurement; work dir {tmp}"
    )
    status = 0
    try:
        bench.run()
    except KeyboardInterrupt:
        bench.log("interrupted")
        status = 130
    except (RuntimeError, wrk.WrkError) as exc:
        bench.log(f"failed: {exc}")
        status = 1
    finally:
        bench.cleanup()
        if not opts.keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    if not bench.baselines:
        return status or 1
    base = report.baseline_by_connections(bench.baselines)
    table_rows = report.rows(bench.measurements, base)
    drift = report.baseline_drift(bench.baseline_samples)
    extras = {**bench.extras, "profiles": bench.profiles}
    print()
    print(report.format_table(table_rows, bench.baselines, drift))
    print()
    print(report.format_extras(extras))
    out = opts.out or RESULTS / f"{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        report.to_json(
            meta=bench.meta(), baselines=bench.baselines, table_rows=table_rows, extras=extras
        )
        + "\n"
    )
    print(f"\nresults: {out}")
    return status

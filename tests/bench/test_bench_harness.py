"""The benchmark harness's pure parts: options, Lua generation, wrk output, ratios and the
report, the daemon config, seeding. No wrk run here, and no timing is ever asserted."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench import configs, harness, lua, options, profiling, report, scenarios, seeding, wrk
from bench.report import Measurement
from mcp_oauthd.config.models import Config
from mcp_oauthd.oauth import pkce
from mcp_oauthd.oauth.tokens import ACCESS_PREFIX, CODE_PREFIX, REFRESH_PREFIX, token_hash
from mcp_oauthd.storage.memory import MemoryStorage

WRK_STDOUT = """Running 5s test @ http://127.0.0.1:8080/oauth/introspect
  2 threads and 64 connections
BENCH_JSON {"requests":25000,"duration_us":5000000,"bytes":1000,"connect":0,"read":2,"write":0,\
"status":3,"timeout":1,"p50_us":2500,"p90_us":4000,"p99_us":9000,"mean_us":2600.5,\
"max_us":20000,"used_max":120,"exhausted":0,"threads":2}
Requests/sec:   5000.00
"""


def m(scenario: str, backend: str, connections: int, rps: float, **kw: object) -> Measurement:
    return Measurement(scenario, backend, connections, rps, 1.0, 5.0, int(rps), 1.0, **kw)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- options
def test_the_defaults_load_every_backend_at_16_64_and_256_connections() -> None:
    opts = options.parse([])
    assert opts.backends == ("memory", "sqlite", "redis")
    assert opts.connections == (16, 64, 256)
    assert set(opts.extras) == set(options.EXTRAS)
    assert opts.state_grants == 100_000
    assert opts.profile == ()
    assert options.pool_for(opts, "memory") == options.DEFAULT_POOL
    assert options.pool_for(opts, "redis") == options.REDIS_POOL
    assert options.pool_for(options.parse(["--pool", "7"]), "redis") == 7


def test_storage_independent_scenarios_run_on_memory_only_unless_named() -> None:
    default = options.parse([])
    assert "discovery" in options.scenarios_for(default, "memory")
    assert "discovery" not in options.scenarios_for(default, "sqlite")
    assert "introspect-opaque" in options.scenarios_for(default, "redis")
    named = options.parse(["--scenarios", "discovery,refresh"])
    assert options.scenarios_for(named, "redis") == ("discovery", "refresh")


def test_lists_durations_and_flags_are_parsed() -> None:
    opts = options.parse(
        [
            "--backends",
            "sqlite",
            "--connections",
            "8, 32",
            "--warmup",
            "5s",
            "--duration",
            "10",
            "--extras",
            "none",
            "--big-state",
            "--profile",
            "introspect-opaque",
        ]
    )
    assert opts.backends == ("sqlite",)
    assert opts.connections == (8, 32)
    assert (opts.warmup, opts.duration) == (5.0, 10.0)
    assert opts.extras == ()
    assert opts.state_grants == options.BIG_STATE
    assert opts.profile == ("introspect-opaque",)


def test_quick_mode_shrinks_durations_and_pools() -> None:
    opts = options.parse(["--quick"])
    assert opts.connections == (64,)
    assert opts.duration <= 1.0
    assert options.pool_for(opts, "memory") < 10_000


@pytest.mark.parametrize(
    "argv",
    [["--backends", "mysql"], ["--connections", "0"], ["--scenarios", "nope"], ["--warmup", "x"]],
)
def test_bad_arguments_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        options.parse(argv)


# ----------------------------------------------------------------------------- Lua
def test_lua_strings_escape_quotes_backslashes_and_control_bytes() -> None:
    assert lua.lua_string('a"b\\c') == '"a\\"b\\\\c"'
    assert lua.lua_string("x\ny") == '"x\\010y"'
    assert lua.lua_string("é") == '"\\195\\169"'


def test_templates_become_lua_concatenations_of_literals_and_variables() -> None:
    assert lua.template_expr("token={token}") == '"token=" .. tok'
    assert lua.template_expr("{token}") == "tok"
    assert (
        lua.template_expr("c-{thread}-{n}!") == '"c-" .. tostring(id) .. "-" .. tostring(n) .. "!"'
    )
    assert lua.template_expr("") == '""'


def test_a_pool_script_prebuilds_requests_and_reports_through_done() -> None:
    scenario = scenarios.scenario_named("seed", "introspect-opaque")
    text = lua.generate(
        name=scenario.name,
        method=scenario.method,
        path=scenario.path,
        headers=scenario.headers,
        body=scenario.body,
    )
    assert 'wrk.format("POST", "/oauth/introspect", headers(tok), "token=" .. tok)' in text
    assert "pool[npool] = build(line)" in text  # pre-built once per pool entry
    assert "function done(summary, latency, requests)" in text
    assert lua.JSON_MARKER.strip() in text
    assert "latency:percentile(99)" in text
    assert '["Authorization"] = "Basic ' in text


def test_a_counter_in_the_body_builds_each_request_in_request() -> None:
    scenario = scenarios.scenario_named("seed", "register")
    text = lua.generate(
        name=scenario.name,
        method=scenario.method,
        path=scenario.path,
        headers=scenario.headers,
        body=scenario.body,
    )
    assert "return build(next_value())" in text
    assert "pool[npool] = line" in text
    assert "tostring(n)" in text and "tostring(id)" in text


def test_a_bearer_header_template_carries_the_pool_value() -> None:
    scenario = scenarios.scenario_named("seed", "verify-opaque")
    text = lua.generate(
        name=scenario.name, method="GET", path=scenario.path, headers=scenario.headers
    )
    assert '["Authorization"] = "Bearer " .. tok' in text
    assert 'wrk.format("GET", "/auth/verify", headers(tok), nil)' in text


def test_single_use_pools_are_split_between_threads_and_report_exhaustion() -> None:
    text = lua.generate(name="x", method="POST", path="/t", body="t={token}")
    assert "(line_no - start) % nthreads == id - 1" in text
    assert 'once = (args[4] == "once")' in text
    assert f'build("{lua.EXHAUSTED}")' in text
    assert 't:get("used")' in text and 't:get("exhausted")' in text


def test_unsupported_methods_are_refused() -> None:
    with pytest.raises(ValueError):
        lua.generate(name="x", method="TRACE", path="/")


# ----------------------------------------------------------------------------- wrk
def test_the_bench_json_line_is_read_into_a_result() -> None:
    result = wrk.parse_output(WRK_STDOUT)
    assert result.requests == 25_000
    assert result.rps == pytest.approx(5000.0)
    assert (result.p50_ms, result.p99_ms) == (2.5, 9.0)
    assert result.socket_errors == 3
    assert result.non_2xx == 3
    assert result.errors == 6
    assert result.error_counts()["read"] == 2


def test_output_without_the_marker_is_an_error() -> None:
    with pytest.raises(wrk.WrkError):
        wrk.parse_output("Running 5s test\nRequests/sec: 1\n")


def test_the_wrk_command_passes_pool_start_threads_and_mode_to_the_script() -> None:
    args = wrk.command(
        "http://127.0.0.1:1/x",
        Path("s.lua"),
        connections=1,
        threads=4,
        duration=4.6,
        timeout=10,
        pool=Path("p.txt"),
        start=7,
        once=True,
    )
    assert args[:5] == ["wrk", "-t1", "-c1", "-d5s", "--timeout=10s"]
    assert args[-5:] == ["--", "p.txt", "7", "1", "once"]
    assert wrk.command("u", Path("s"), connections=64, threads=2, duration=1, timeout=1)[-4:] == [
        "-",
        "0",
        "2",
        "cycle",
    ]


def test_the_next_single_use_run_starts_past_every_line_a_thread_used() -> None:
    result = wrk.parse_output(WRK_STDOUT)  # used_max 120, 2 threads
    assert wrk.next_start(1, result) == 241


# ----------------------------------------------------------------------------- report
def test_ratios_divide_by_the_mean_baseline_at_the_same_connection_count() -> None:
    baselines = [m("baseline", "aiohttp", 64, 8000), m("baseline", "aiohttp", 64, 6000)]
    base = report.baseline_by_connections(baselines)
    assert base == {64: 7000.0}
    assert report.baseline_drift(baselines)[64] == pytest.approx(2000 / 7000)
    rows = report.rows([m("introspect-opaque", "memory", 64, 5600)], base)
    assert rows[0].ratio == pytest.approx(0.8)
    assert rows[0].target == 0.80
    assert rows[0].verdict == "PASS"


def test_a_paired_baseline_takes_precedence_over_the_run_mean() -> None:
    measured = m("refresh", "sqlite", 64, 1000, paired_baseline_rps=4000.0)
    row = report.rows([measured], {64: 10_000.0})[0]
    assert row.ratio == pytest.approx(0.25)
    assert row.verdict == "FAIL"


def test_targets_apply_at_64_connections_only_and_missing_baselines_give_no_ratio() -> None:
    rows = report.rows(
        [m("introspect-opaque", "redis", 256, 100), m("code", "memory", 64, 100)], {64: 1.0}
    )
    assert rows[0].ratio is None and rows[0].target is None
    assert rows[1].target is None and rows[1].verdict == ""


def test_the_table_shows_baselines_ratios_targets_and_errors() -> None:
    baselines = [m("baseline", "aiohttp", 64, 8000, note="start")]
    measured = [
        m("introspect-opaque", "sqlite", 64, 4000, errors={"read": 2, "non_2xx": 0}),
        m("discovery", "memory", 64, 7000, paired_baseline_rps=7000.0),
    ]
    text = report.format_table(
        report.rows(measured, {64: 8000.0}), baselines, report.baseline_drift(baselines)
    )
    assert "baseline" in text and "(start)" in text
    assert "0.50" in text and ">=0.70" in text and "FAIL" in text
    assert "read=2" in text
    assert "1.00*" in text and "ratio*" in text


def test_extras_are_reported_with_their_verdicts() -> None:
    extras = {
        "workers": {"scenario": "introspect-opaque", "connections": 64, "one": 1000.0,
                    "two": 1700.0, "ratio": 1.7, "rounds": [1.6, 1.7, 1.75, 1.8]},
        "state": [{"backend": "sqlite", "small": 1000, "large": 1_000_000, "small_rps": 100.0,
                   "large_rps": 90.0, "ratio": 0.9, "rounds": [0.8, 0.9, 0.9, 0.95]}],
        "c10k": {"connections": 10_000, "scenario": "introspect-opaque", "backend": "memory",
                 "rps": 500.0, "p99_ms": 900.0, "errors": {"connect": 0}, "errors_total": 0},
        "rss": {"grants": 100_000, "rss_mb": 400.0, "empty_mb": 80.0, "bytes_per_grant": 3355.0},
        "startup": [{"backend": "sqlite", "startup_ms": 700.0, "spawn_to_ready_ms": 1500.0}],
        "notes": ["something was skipped"],
    }  # fmt: skip
    text = report.format_extras(extras)
    assert "1.70x, median of 4 alternating pairs (1.60x-1.80x)" in text and "PASS" in text
    assert "1,000,000 vs 1,000 grants" in text
    assert "0.90, median of 4 alternating pairs (0.80-0.95)" in text
    assert "10,000 concurrent connections" in text
    assert "400 MB" in text and "FAIL" in text
    assert "note: something was skipped" in text
    verdicts = {v["what"]: v["pass"] for v in report.verdicts([], extras)}
    assert verdicts["two sqlite workers vs one"] is True
    assert verdicts["RSS with 100000 grants in memory storage (MB)"] is False


def test_the_results_json_carries_meta_baselines_results_and_verdicts() -> None:
    baselines = [m("baseline", "aiohttp", 64, 8000)]
    rows = report.rows([m("verify-opaque", "memory", 64, 6400)], {64: 8000.0})
    document = json.loads(
        report.to_json(meta={"git": "abc"}, baselines=baselines, table_rows=rows, extras={})
    )
    assert document["meta"] == {"git": "abc"}
    assert document["baseline"]["mean_rps"] == {"64": 8000.0}
    assert document["results"][0]["ratio"] == 0.8
    assert document["verdicts"] == [
        {"what": "verify-opaque on memory", "value": 0.8, "target": ">= 0.7", "pass": True}
    ]


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize("backend", ["memory", "sqlite", "redis"])
@pytest.mark.parametrize("token_format", ["opaque", "jwt"])
def test_the_bench_config_is_a_valid_shipped_config_with_raised_budgets(
    backend: str, token_format: str, tmp_path: Path
) -> None:
    data = configs.daemon_config(
        backend=backend,
        port=8123,
        seed="s",
        password_hash="$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
        token_format=token_format,
        sqlite_path=str(tmp_path / "b.db"),
        redis_url="redis://127.0.0.1:6379/0",
        redis_prefix="bench:",
    )
    config = Config.model_validate(data)
    assert config.rate_limits.enabled  # the limiter runs; only the budgets are raised
    assert config.rate_limits.token.per_minute == configs.RAISED_BUDGET["per_minute"]
    assert config.observability.metrics.enabled
    assert config.logging.access_log
    assert config.tokens.format == token_format
    assert config.default_resource.introspection_client_id == configs.RS_CLIENT_ID


def test_an_unknown_backend_has_no_config() -> None:
    with pytest.raises(ValueError):
        configs.daemon_config(backend="mysql", port=1, seed="s", password_hash="$argon2id$x")


def test_the_introspection_header_authenticates_the_configured_resource_server() -> None:
    header = scenarios.introspection_headers("s")["Authorization"]
    assert header == scenarios.basic(configs.RS_CLIENT_ID, configs.rs_secret("s"))
    assert len(configs.rs_secret("s")) >= 32


def test_scenario_names_are_unique_and_fill_replaces_every_placeholder() -> None:
    names = [s.name for s in scenarios.all_scenarios("s")]
    assert len(names) == len(set(names))
    assert scenarios.fill("a={token}&n={n}&t={thread}", "X", 3, 2) == "a=X&n=3&t=2"


# ----------------------------------------------------------------------------- seeding
def test_seeded_values_are_token_shaped_unique_and_reproducible() -> None:
    spec = seeding.SeedSpec(salt="s1", now=1_800_000_000.0, grants=3)
    first = seeding.access_value(spec, 0)
    assert first.startswith(ACCESS_PREFIX) and len(first) == len(ACCESS_PREFIX) + 43
    assert first == seeding.access_value(spec, 0)
    assert first != seeding.access_value(spec, 1)
    assert seeding.refresh_value(spec, 0).startswith(REFRESH_PREFIX)
    assert seeding.code_value(spec, 0).startswith(CODE_PREFIX)
    assert seeding.SeedSpec.from_json(spec.to_json()) == spec


def test_a_seeded_grant_stores_only_hashes_and_binds_its_tokens() -> None:
    spec = seeding.SeedSpec(salt="s1", now=1_800_000_000.0, grants=1)
    item = seeding.grant_of(spec, 0)
    assert item.access.token_hash == token_hash(item.access_token)
    assert item.refresh.token_hash == token_hash(item.refresh_token)
    assert item.access.grant_id == item.refresh.grant_id == item.grant.grant_id
    code, value = seeding.code_of(spec, 0)
    assert code.code_hash == token_hash(value)
    pkce.verify(seeding.CODE_VERIFIER, code.code_challenge)  # raises if they do not match


async def test_seeding_memory_storage_writes_records_and_pool_files(tmp_path: Path) -> None:
    data = configs.daemon_config(
        backend="memory",
        port=8123,
        seed="s",
        password_hash="$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
    )
    config = Config.model_validate(data)
    storage = MemoryStorage()
    spec = seeding.SeedSpec(salt="t", now=1_800_000_000.0, grants=20, codes=5, access_pool=10)
    result = await seeding.seed(storage, config, spec, tmp_path)
    assert (result["grants"], result["codes"], result["format"]) == (20, 5, "opaque")
    access = (tmp_path / "access.txt").read_text().split()
    assert len(access) == 10 and len(set(access)) == 10
    for token in access:
        assert await storage.get_access_token(token_hash(token)) is not None
    assert len((tmp_path / "refresh.txt").read_text().split()) == 20
    codes = (tmp_path / "codes.txt").read_text().split()
    assert (await storage.consume_code(token_hash(codes[0]), spec.now)).code is not None


# ----------------------------------------------------------------------------- profiles
def test_a_collapsed_profile_is_summarised_by_self_inclusive_and_category() -> None:
    collapsed = "\n".join(
        [
            "run (asyncio/base_events.py:1);handler (/x/main/mcp_oauthd/http/api.py:5);"
            "info (/v/site-packages/structlog/_log.py:9) 30",
            "run (asyncio/base_events.py:1);handler (/x/main/mcp_oauthd/http/api.py:5);"
            "loads (/usr/lib/python3.11/json/decoder.py:3) 10",
            "run (asyncio/base_events.py:1) 60",
            "garbage line",
        ]
    )
    summary = profiling.summarize(collapsed)
    assert summary.samples == 100
    assert summary.self_top[0] == ("run (asyncio/base_events.py)", 60)
    assert ("handler (mcp_oauthd/http/api.py)", 40) in summary.ours
    assert ("run (asyncio/base_events.py)", 100) in summary.inclusive_top
    categories = dict(summary.categories)
    assert categories["logging (structlog/stdlib)"] == 30
    assert categories["json encode/decode"] == 10
    assert categories["asyncio event loop"] == 60
    assert "60.0%" in summary.format()


def test_a_sample_is_charged_to_its_leaf_most_telling_frame() -> None:
    wrapper = "metrics_middleware (/x/mcp_oauthd/observability/metrics.py:1)"
    ours = "introspect (/x/mcp_oauthd/service/introspect.py:9)"
    assert profiling.categorize([wrapper, ours]) == profiling.OURS
    assert profiling.categorize([wrapper]) == "metrics (prometheus, storage wrapper)"
    assert profiling.categorize(["f (/x/site-packages/yarl/_url.py:3)"]) == (
        "aiohttp HTTP machinery"
    )
    assert profiling.short_frame("f (/a/lib/python3.11/site-packages/aiohttp/web.py:12)") == (
        "f (aiohttp/web.py:12)"
    )


def test_the_py_spy_command_records_raw_stacks_without_pausing_the_daemon() -> None:
    cmd = profiling.record_command("py-spy", 42, 9.6, Path("o.txt"))
    assert cmd[:3] == ["py-spy", "record", "--pid"]
    assert "--nonblocking" in cmd and "raw" in cmd and "10" in cmd


# ------------------------------------------------------------------ server CPU per request
def test_server_cpu_per_request_divides_the_cpu_time_by_the_requests() -> None:
    result = wrk.WrkResult(
        requests=4000, duration_s=4.0, p50_ms=1, p90_ms=1, p99_ms=1, mean_ms=1, max_ms=1
    )
    assert result.cpu_us_per_request is None  # not measured
    measured = wrk.WrkResult(**{**result.__dict__, "server_cpu_s": 0.25})
    assert measured.cpu_us_per_request == pytest.approx(62.5)


def test_cpu_seconds_reads_a_process_s_user_and_system_time() -> None:
    import os

    from bench import procs

    assert procs.cpu_seconds(os.getpid()) > 0


def test_requests_past_a_used_up_pool_are_not_counted_as_daemon_errors() -> None:
    result = wrk.WrkResult(
        requests=100,
        duration_s=1.0,
        p50_ms=1,
        p90_ms=1,
        p99_ms=1,
        mean_ms=1,
        max_ms=1,
        non_2xx=10,
        exhausted=4,
    )
    assert result.error_counts()["non_2xx"] == 6
    assert result.error_counts()["exhausted"] == 4


# ----------------------------------------------------------------------------- comparisons
class FakeDaemonBench(harness.Bench):
    """The harness with daemons that are never started and loads that are never run:
    each load answers the req/s the test scripted for that daemon, in order."""

    def __init__(self, tmp: Path, rps: dict[str, list[float]]) -> None:
        super().__init__(options.parse(["--warmup", "1s", "--duration", "4s"]), tmp)
        self.scripted = rps
        self.loads: list[tuple[str, float]] = []

    @contextlib.contextmanager
    def daemon(self, backend: str, label: str, **kwargs: Any) -> Iterator[harness.Daemon]:
        yield harness.Daemon(label, backend, "opaque", 1, label, None, Path(), {}, 0.0)  # type: ignore[arg-type]

    def sanity(self, d: harness.Daemon, scenario: scenarios.Scenario) -> None:
        pass

    def load(
        self,
        url: str,
        scenario: scenarios.Scenario,
        pools: Path | None,
        *,
        connections: int,
        duration: float,
        **kw: Any,
    ) -> tuple[wrk.WrkResult, int]:
        self.loads.append((url, duration))
        warm = duration == self.opts.warmup
        rps = 1.0 if warm else self.scripted[url].pop(0)
        return wrk.WrkResult(int(rps * duration), duration, 1, 1, 1, 1, 1), 0


def test_two_workers_and_one_are_measured_in_alternation_and_compared_pair_by_pair(
    tmp_path: Path,
) -> None:
    bench = FakeDaemonBench(
        tmp_path, {"workers-1": [100, 200, 100, 100], "workers-2": [170, 160, 180, 150]}
    )
    bench.extra_workers()
    assert bench.loads == [
        ("workers-1", 1.0),
        ("workers-2", 1.0),
        # Each run half the measurement time: the comparison takes as long as two did.
        *[(label, 2.0) for _ in range(4) for label in ("workers-1", "workers-2")],
    ]
    workers = bench.extras["workers"]
    # Pairs 1.7, 0.8, 1.8, 1.5: the slow second run moved one pair, not the verdict.
    assert workers["rounds"] == [1.7, 0.8, 1.8, 1.5]
    assert workers["ratio"] == 1.6
    assert (workers["one"], workers["two"]) == (100.0, 165.0)


def test_more_state_and_less_are_measured_in_alternation_on_each_backend(
    tmp_path: Path,
) -> None:
    small, large = "state-sqlite-1000", "state-sqlite-100000"
    bench = FakeDaemonBench(tmp_path, {small: [100, 90, 110, 100], large: [95, 90, 99, 80]})
    bench.opts = dataclasses.replace(bench.opts, state_backends=("sqlite",))
    bench.extra_state()
    [state] = bench.extras["state"]
    assert [url for url, _ in bench.loads[2:]] == [small, large] * 4
    assert state["rounds"] == [0.95, 1.0, 0.9, 0.8]
    assert state["ratio"] == 0.925
    assert state["large"] == 100_000


def wrk_result(requests: int, **kw: Any) -> wrk.WrkResult:
    fields: dict[str, Any] = {"duration_s": 1.0, "p50_ms": 2.0, "p90_ms": 3.0, "p99_ms": 4.0}
    fields |= {"mean_ms": 2.5, "max_ms": 9.0, "threads": 2, "server_cpu_s": 0.5}
    return wrk.WrkResult(requests, **(fields | kw))


def test_runs_merge_into_one_result_with_the_worst_tail() -> None:
    one = wrk_result(1000, p50_ms=2.0, p99_ms=4.0, read_errors=1, used_max=10)
    two = wrk_result(3000, p50_ms=3.0, p99_ms=40.0, mean_ms=5.0, used_max=30)
    three = wrk_result(2000, p50_ms=1.0, p99_ms=5.0, server_cpu_s=None)
    merged = wrk.merged([one, two])
    assert (merged.requests, merged.duration_s, merged.rps) == (4000, 2.0, 2000.0)
    assert (merged.p50_ms, merged.p99_ms, merged.read_errors) == (2.5, 40.0, 1)
    assert merged.mean_ms == (2.5 * 1000 + 5.0 * 3000) / 4000
    assert (merged.used_max, merged.server_cpu_s) == (40, 1.0)
    assert wrk.merged([one, two, three]).p50_ms == 2.0
    assert wrk.merged([one, three]).server_cpu_s is None  # unknown for part of the time


class PairedBench(harness.Bench):
    """The harness with a scripted baseline: its runs answer the req/s given, in order."""

    def __init__(self, tmp: Path, baseline: list[float], duration: str = "4s") -> None:
        super().__init__(options.parse(["--duration", duration]), tmp)
        self.scripted = baseline
        self.order: list[str] = []

    def baseline_load(self, connections: int, duration: float) -> wrk.WrkResult:
        self.order.append(f"B{duration:g}")
        return wrk_result(int(self.scripted.pop(0) * duration), duration_s=duration)


def test_the_target_measurement_alternates_with_the_baseline_and_takes_the_median_pair(
    tmp_path: Path,
) -> None:
    bench = PairedBench(tmp_path, [1000, 1000, 1000, 1000, 1000])
    daemon = [800, 800, 400, 800]  # one slow second
    starts: list[int] = []

    def run(start: int, duration: float) -> tuple[wrk.WrkResult, int]:
        bench.order.append(f"D{duration:g}")
        starts.append(start)
        return wrk_result(daemon.pop(0), used_max=5), start + 10

    result, next_start, mean_baseline, pairs = bench.paired(run, 64, start=7)
    assert bench.order == ["B1", "D1", "B1", "D1", "B1", "D1", "B1", "D1", "B1"]
    assert starts == [7, 17, 27, 37] and next_start == 47  # single-use pools move on
    assert pairs == [0.8, 0.8, 0.4, 0.8]
    assert (mean_baseline, result.requests) == (1000.0, 2800)
    m = harness._measurement("introspect-opaque", "memory", 64, result, "", mean_baseline, pairs)
    # The slow second is one pair of four, not a quarter off the verdict (0.7).
    assert report.ratio_of(m, {}) == 0.8
    text = report.format_table(report.rows([m], {64: 1000.0}), [], {})
    assert "0.80**" in text and "[0.80 0.80 0.40 0.80]" in text and "ratio**" in text


def test_a_short_measurement_makes_fewer_pairs(tmp_path: Path) -> None:
    bench = PairedBench(tmp_path, [1000, 1000], duration="1s")

    def run(start: int, duration: float) -> tuple[wrk.WrkResult, int]:
        bench.order.append(f"D{duration:g}")
        return wrk_result(1000), start

    *_, pairs = bench.paired(run, 64, start=0)
    assert bench.order == ["B1", "D1", "B1"] and pairs == [1.0]

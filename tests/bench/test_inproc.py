"""bench.inproc, the in-process cost-per-request tool: a short real run on memory storage
(every response a 200), its options, its 200 check and its callgrind totals parser. No
valgrind here, and no timing value is asserted beyond being positive."""

from __future__ import annotations

import io
import shutil

import pytest

from bench import inproc

# Each test configures logging (process-wide): leave it as it was found.
pytestmark = pytest.mark.usefixtures("restore_logging")


CALLGRIND_OUT = """\
# callgrind format
version: 1
creator: callgrind-3.19.0
pid: 11344
cmd:  python -m bench.inproc introspect
part: 1

desc: I1 cache:
positions: line
events: Ir
summary: 0

ob=(1) /usr/bin/python3.11
fl=(1) ???
fn=(1) _PyEval_EvalFrameDefault
0 120
totals: 353865303
"""


@pytest.mark.parametrize(
    ("scenario", "lane"), [("introspect", True), ("verify", True), ("introspect", False)]
)
async def test_a_short_run_measures_positive_cpu_per_request_with_every_answer_a_200(
    scenario: str, lane: bool
) -> None:
    opts = inproc.Options(scenario, requests=64, grants=200, access_pool=100, lane=lane)
    result = await inproc.measure_cpu(opts, log_stream=io.StringIO())
    # One round per block (64 requests fewer than 12 blocks' worth) and the warm-up.
    assert result.requests == inproc.BLOCKS * inproc.CONNECTIONS
    assert result.answered == (inproc.WARMUP_ROUNDS + inproc.BLOCKS) * inproc.CONNECTIONS
    assert result.min_us > 0
    assert result.median_us >= result.min_us
    line = result.line()
    assert line.startswith(f"{scenario:<11} memory   cpu min ")
    assert line.endswith("(768 requests)" if lane else "(768 requests, no lane)")


async def test_refresh_seeds_a_refresh_token_for_every_request_and_uses_each_once() -> None:
    # Fewer grants asked for than requests made: the seeding makes enough anyway.
    opts = inproc.Options("refresh", requests=64, grants=10, access_pool=10)
    result = await inproc.measure_cpu(opts, log_stream=io.StringIO())
    assert result.answered == (inproc.WARMUP_ROUNDS + inproc.BLOCKS) * inproc.CONNECTIONS
    assert result.min_us > 0


async def test_the_profile_option_prints_a_cprofile_table_sorted_as_asked() -> None:
    opts = inproc.Options("baseline", requests=64, profile="cumtime")
    table = io.StringIO()
    result = await inproc.measure_cpu(opts, log_stream=io.StringIO(), profile_out=table)
    assert "Ordered by: cumulative time" in table.getvalue()
    assert result.line().startswith("baseline    aiohttp  cpu min ")
    assert result.line().endswith(", under cProfile)")


def test_an_answer_other_than_200_stops_the_measurement() -> None:
    responses = inproc.Responses()
    ok, refused = inproc.FakeTransport(responses), inproc.FakeTransport(responses)
    ok.buf += b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    refused.buf += b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n"
    inproc.check_answers([ok])
    with pytest.raises(inproc.MeasureError, match="401 Unauthorized"):
        inproc.check_answers([ok, refused])


def test_an_introspection_answer_that_is_not_active_stops_the_measurement() -> None:
    transport = inproc.FakeTransport(inproc.Responses())
    transport.buf += b'HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n{"active":false}'
    inproc.check_answers([transport])
    with pytest.raises(inproc.MeasureError, match='not a 200 with "active":true'):
        inproc.check_answers([transport], inproc.ACTIVE)


@pytest.mark.parametrize(("scenario", "status"), [("introspect", "200"), ("verify", "401")])
async def test_a_run_whose_tokens_are_not_the_seeded_ones_fails_instead_of_measuring(
    scenario: str, status: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = inproc.request_shape

    def unseeded(name: str) -> inproc.RequestShape:
        return lambda token: real(name)("at_" + "A" * 43)

    monkeypatch.setattr(inproc, "request_shape", unseeded)
    opts = inproc.Options(scenario, requests=64, grants=100, access_pool=10)
    with pytest.raises(inproc.MeasureError, match=f"HTTP/1.1 {status} "):
        await inproc.measure_cpu(opts, log_stream=io.StringIO())


def test_a_round_is_over_when_every_connection_has_started_its_response() -> None:
    responses = inproc.Responses()
    responses.pending = 2
    first, second = inproc.FakeTransport(responses), inproc.FakeTransport(responses)
    first.write(b"HTTP/1.1 200 OK\r\n")
    first.writelines([b"more of the same response"])
    assert responses.pending == 1
    second.writelines([b"HTTP/1.1 200 OK\r\n", b"\r\n"])
    assert responses.pending == 0


def test_the_raw_requests_are_the_benchmark_shapes_with_the_token_filled_in() -> None:
    verify = inproc.raw_request(inproc.request_shape("verify"), "at_abc")
    assert verify.startswith(b"GET /auth/verify HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n")
    assert b"\r\nAuthorization: Bearer at_abc\r\n" in verify
    assert verify.endswith(b"\r\n\r\n")
    introspect = inproc.raw_request(inproc.request_shape("introspect"), "at_abc")
    assert introspect.startswith(b"POST /oauth/introspect HTTP/1.1\r\n")
    assert b"\r\nAuthorization: Basic " in introspect
    assert introspect.endswith(b"\r\nContent-Length: 12\r\n\r\ntoken=at_abc")
    refresh = inproc.raw_request(inproc.request_shape("refresh"), "rt_abc")
    assert b"grant_type=refresh_token&" in refresh
    assert refresh.endswith(b"&refresh_token=rt_abc")


def test_the_defaults_measure_introspection_on_memory_with_the_hot_lane() -> None:
    opts, child = inproc.parse(["introspect"])
    assert opts == inproc.Options("introspect")
    assert child is None
    counting, _ = inproc.parse(["verify", "--backend", "sqlite", "--callgrind", "--no-lane"])
    assert counting.requests == inproc.DEFAULT_CALLGRIND_REQUESTS
    assert (counting.backend, counting.callgrind, counting.lane) == ("sqlite", True, False)
    assert counting.measured_rounds == inproc.DEFAULT_CALLGRIND_REQUESTS // inproc.CONNECTIONS


def test_the_child_run_under_callgrind_is_given_the_same_measurement() -> None:
    opts, _ = inproc.parse(["refresh", "--requests", "640", "--grants", "5", "--no-lane"])
    again, _ = inproc.parse([*inproc.child_args(opts), "--callgrind-child", "/tmp/x.json"])
    assert again.requests == opts.requests
    assert (again.scenario, again.grants, again.lane) == ("refresh", 5, False)


@pytest.mark.parametrize(
    "argv",
    [
        ["nonsense"],
        ["introspect", "--backend", "redis"],
        ["introspect", "--backend", "postgres"],
        ["introspect", "--requests", "0"],
        ["introspect", "--requests", "63"],
        ["introspect", "--profile", "calls"],
        ["introspect", "--callgrind", "--profile", "tottime"],
    ],
)
def test_unknown_scenarios_backends_and_meaningless_options_are_refused(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        inproc.parse(argv)
    assert exit_.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_the_callgrind_total_is_the_files_totals_line_not_its_sum_with_the_summary() -> None:
    assert inproc.callgrind_total(CALLGRIND_OUT.splitlines()) == 353_865_303
    # Older valgrinds: a summary line only; several events: the first (instructions).
    assert inproc.callgrind_total(["events: Ir Dr", "summary: 1200 300"]) == 1200
    assert inproc.callgrind_total(["events: Ir", "fn=(1) main", "0 5"]) == 0


def test_a_count_is_reported_in_thousands_of_instructions_per_request() -> None:
    opts = inproc.Options("introspect", requests=2000, callgrind=True)
    result = inproc.CountResult(opts, requests=1984, instructions=374_900 * 1984)
    assert result.line() == (
        "introspect  memory   374k instructions/req (callgrind, 1,984 requests)"
    )


def test_missing_valgrind_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda _: None)
    with pytest.raises(inproc.ToolMissing, match="valgrind and callgrind_control"):
        inproc.measure_callgrind(inproc.Options("introspect", callgrind=True))
    assert inproc.main(["introspect", "--callgrind"]) == 2

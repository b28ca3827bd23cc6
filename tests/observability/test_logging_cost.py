"""A log line and an audit event are cheap: our structlog lines are rendered in one pass
and written with one call, without the stdlib logging machinery, and the redaction skips
the regex for values that cannot hold a credential, all with the same output."""

from __future__ import annotations

import io
import json
import logging
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from mcp_oauthd.config.models import LoggingConfig
from mcp_oauthd.observability import logging as obs_logging
from mcp_oauthd.observability.logging import (
    REDACTED,
    configure_logging,
    redact_credentials,
    scrub_value,
    utc_timestamp,
)
from mcp_oauthd.security.audit import Auditor

# Each test configures logging (process-wide): leave it as it was found.
pytestmark = pytest.mark.usefixtures("restore_logging")

# The definition the fast paths must agree with.
AUTH_SCHEME = re.compile(r"\b(Bearer|Basic|DPoP)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE)


def reference_scrub(text: str) -> str:
    return AUTH_SCHEME.sub(lambda m: f"{m.group(1)} {REDACTED}", text)


class RecordingStream:
    """A text stream that counts its write and flush calls."""

    def __init__(self, *, line_buffering: bool) -> None:
        self.line_buffering = line_buffering
        self.writes: list[str] = []
        self.flushes = 0

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        self.flushes += 1

    def isatty(self) -> bool:
        return False


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def emit_refresh(auditor: Auditor) -> None:
    auditor.emit(
        "token.refreshed",
        client_id="cli",
        subject="alice",
        grant_id="g-123456",
        resource="http://127.0.0.1:9999/mcp",
        scope="files:read",
    )


# ------------------------------------------------------------------ same output
def test_an_audit_line_has_the_keys_in_the_order_of_the_stdlib_route() -> None:
    stream = io.StringIO()
    configure_logging(LoggingConfig(format="json"), stream=stream)
    structlog.contextvars.bind_contextvars(request_id="req-1")
    emit_refresh(Auditor())
    [line] = lines(stream)
    assert list(line) == [
        "audit",
        "client_id",
        "subject",
        "grant_id",
        "resource",
        "scope",
        "event",
        "request_id",
        "level",
        "logger",
        "timestamp",
    ]
    assert line["logger"] == "mcp_oauthd.audit"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z", line["timestamp"])


def test_the_timestamp_is_the_text_of_datetime_isoformat(monkeypatch: pytest.MonkeyPatch) -> None:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for ns in (1_780_000_000_000_000_000, 1_780_000_000_123_456_789, 1_780_000_001_000_999):
        monkeypatch.setattr(time, "time_ns", lambda ns=ns: ns)
        expected = (epoch + timedelta(microseconds=ns // 1000)).isoformat()
        assert utc_timestamp() == expected.replace("+00:00", "Z")


def test_the_audit_ring_keeps_its_isoformat_timestamp() -> None:
    auditor = Auditor()
    before = datetime.now(UTC)
    emit_refresh(auditor)
    stamp = str(auditor.events[-1]["timestamp"])
    assert stamp.endswith("+00:00")
    assert before - timedelta(seconds=1) <= datetime.fromisoformat(stamp) <= datetime.now(UTC)


def test_module_loggers_follow_each_new_configuration() -> None:
    from mcp_oauthd.http.middleware import access_log  # a proxy made at import time

    first, second = io.StringIO(), io.StringIO()
    configure_logging(LoggingConfig(format="json"), stream=first)
    access_log.info("one")
    configure_logging(LoggingConfig(level="warning", format="json"), stream=second)
    access_log.info("dropped")
    access_log.warning("two")
    assert [line["event"] for line in lines(first)] == ["one"]
    assert [line["event"] for line in lines(second)] == ["two"]


def test_a_cached_logger_follows_a_lower_level_as_well() -> None:
    from mcp_oauthd.http.middleware import log  # a proxy made at import time

    first, second = io.StringIO(), io.StringIO()
    configure_logging(LoggingConfig(level="warning", format="json"), stream=first)
    log.info("dropped")
    configure_logging(LoggingConfig(level="debug", format="json"), stream=second)
    log.debug("written")
    assert lines(first) == []
    assert [(line["event"], line["level"]) for line in lines(second)] == [("written", "debug")]


def test_a_module_logger_is_assembled_once_not_for_every_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[object] = []
    original = obs_logging._BoundLogger.__init__

    def counting(self: obs_logging._BoundLogger, *args: Any, **kwargs: Any) -> None:
        made.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(obs_logging._BoundLogger, "__init__", counting)
    stream = io.StringIO()
    configure_logging(LoggingConfig(format="json"), stream=stream)
    log = structlog.get_logger("mcp_oauthd.once")
    for status in (200, 201, 204):
        log.info("request", status=status)
    assert len(made) == 1
    assert [line["status"] for line in lines(stream)] == [200, 201, 204]


async def test_every_method_of_structlogs_filtering_loggers_is_there() -> None:
    stream = io.StringIO()
    configure_logging(LoggingConfig(level="info", format="json"), stream=stream)
    log = structlog.get_logger("mcp_oauthd.methods")
    log.debug("no")
    log.log(logging.DEBUG, "no")
    log.msg("msg %s", "one")
    log.log(logging.WARNING, "log %(n)s", {"n": 2})
    log.warn("warn")
    log.fatal("fatal")
    await log.ainfo("ainfo")
    await log.adebug("no")
    try:
        raise KeyError("k")
    except KeyError:
        await log.aexception("aexception")
    got = [(line["event"], line["level"]) for line in lines(stream)]
    assert got == [
        ("msg one", "info"),
        ("log 2", "warning"),
        ("warn", "warning"),
        ("fatal", "critical"),
        ("ainfo", "info"),
        ("aexception", "error"),
    ]
    assert "KeyError" in lines(stream)[-1]["exception"]


def test_stdlib_and_structlog_lines_keep_their_order_on_one_stream() -> None:
    stream = io.StringIO()
    configure_logging(LoggingConfig(format="json"), stream=stream)
    log = structlog.get_logger("mcp_oauthd.t")
    log.info("a")
    logging.getLogger("aiohttp.server").info("b")
    log.info("c")
    assert [line["event"] for line in lines(stream)] == ["a", "b", "c"]


def test_an_exception_is_rendered_and_scrubbed() -> None:
    stream = io.StringIO()
    configure_logging(LoggingConfig(format="json"), stream=stream)
    try:
        raise ValueError("upstream answered Bearer abc.def")
    except ValueError:
        structlog.get_logger("mcp_oauthd.t").exception("boom")
    [line] = lines(stream)
    assert line["level"] == "error"
    assert f"ValueError: upstream answered Bearer {REDACTED}" in line["exception"]
    assert "abc.def" not in stream.getvalue()


def structlog_compact(event: dict[str, Any]) -> str:
    """structlog's own JSONRenderer, with compact separators."""
    rendered = structlog.processors.JSONRenderer(separators=(",", ":"))(None, "info", event)
    assert isinstance(rendered, str)
    return rendered


def test_a_line_is_compact_ascii_json_as_structlogs_renderer_writes_it() -> None:
    class Custom:
        def __structlog__(self) -> str:
            return "custom"

    marker = object()
    event = {
        "a": 1.5,
        "c": '\u00e9\u2028\n"\x1f\x7f\U0001f600',
        "d": [1, (2, 3), {"x": None, 5: True, 2.5: False}],
        "e": Custom(),
        "f": marker,
        "neg": -(2**63),
    }
    line = obs_logging._render_json(None, "info", dict(event))
    assert line == structlog_compact(dict(event))
    assert line.isascii() and len(line.splitlines()) == 1
    assert json.loads(line)["c"] == event["c"]
    assert json.loads(line)["f"] == repr(marker)


def test_what_orjson_refuses_is_rendered_by_the_stdlib_encoder() -> None:
    event = {"big": 10**30, "c": "\u00e9"}
    assert obs_logging._render_json(None, "info", dict(event)) == structlog_compact(event)


def test_nan_and_infinity_are_written_as_null_which_strict_parsers_accept() -> None:
    line = obs_logging._render_json(None, "info", {"a": float("nan"), "b": float("-inf")})
    assert line == '{"a":null,"b":null}'


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(st.dictionaries(st.text(), JSON_VALUES, max_size=6))
def test_every_line_is_one_line_of_ascii_with_the_values_of_structlogs_renderer(
    event: dict[str, Any],
) -> None:
    line = obs_logging._render_json(None, "info", dict(event))
    assert line.isascii()
    assert len(line.splitlines()) == 1
    assert json.loads(line) == json.loads(structlog_compact(dict(event)))


# ------------------------------------------------------------------ same redaction
@pytest.mark.parametrize("space", [c for c in map(chr, range(0x3000 + 1)) if c.isspace()])
def test_every_kind_of_whitespace_still_reaches_the_regex(space: str) -> None:
    assert scrub_value(f"sent Bearer{space}abc") == f"sent Bearer {REDACTED}"
    event = redact_credentials(None, "info", {"note": f"Basic{space}abc"})
    assert event["note"] == f"Basic {REDACTED}"


PIECES = ["Bearer", "basic", "DPOP", "dpop", "xBearer", " ", "  ", "\t", "\n", "\u00a0"]
PIECES += ["\u2003", "\x1f", "\x85", "abc", ".", "=", "-", "\u017f", "\u0131", "é", ""]


@given(st.lists(st.sampled_from(PIECES), max_size=8).map("".join) | st.text(max_size=30))
def test_scrubbing_finds_exactly_what_the_regex_finds(text: str) -> None:
    assert scrub_value(text) == reference_scrub(text)
    assert redact_credentials(None, "info", {"v": text})["v"] == reference_scrub(text)


def test_nested_values_subclasses_and_tuples_are_scrubbed_as_before() -> None:
    class Name(str):
        pass

    value = {
        "Authorization": "x",
        "list": [("Bearer a1", 2), {"refresh_token": "r"}],
        "named": Name("DPoP tok"),
        "n": 1.5,
    }
    assert scrub_value(value) == {
        "Authorization": REDACTED,
        "list": [[f"Bearer {REDACTED}", 2], {"refresh_token": REDACTED}],
        "named": f"DPoP {REDACTED}",
        "n": 1.5,
    }
    event = redact_credentials(None, "info", {"access_token": "t", "_x": "Basic abc"})
    assert event == {"access_token": REDACTED, "_x": f"Basic {REDACTED}"}


# ------------------------------------------------------------------ cheap
class CountingPattern:
    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern = pattern
        self.calls = 0

    def sub(self, repl: Any, text: str) -> str:
        self.calls += 1
        return self.pattern.sub(repl, text)


def test_values_without_whitespace_never_run_the_regex(monkeypatch: pytest.MonkeyPatch) -> None:
    counting = CountingPattern(obs_logging._AUTH_SCHEME)
    monkeypatch.setattr(obs_logging, "_AUTH_SCHEME", counting)
    stream = io.StringIO()
    configure_logging(LoggingConfig(format="json"), stream=stream)
    structlog.contextvars.bind_contextvars(request_id="req-1")
    emit_refresh(Auditor())
    assert counting.calls == 0
    Auditor().emit("login.failed", reason="upstream said Bearer abc")
    assert counting.calls > 0
    assert "abc" not in stream.getvalue()


def test_our_lines_bypass_the_stdlib_logging_machinery(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    configure_logging(LoggingConfig(format="json"), stream=stream)
    handled: list[str] = []
    original = logging.Logger.handle

    def handle(self: logging.Logger, record: logging.LogRecord) -> None:
        handled.append(self.name)
        original(self, record)

    monkeypatch.setattr(logging.Logger, "handle", handle)
    emit_refresh(Auditor())
    structlog.get_logger("mcp_oauthd.access").info("request", status=200)
    logging.getLogger("aiohttp.server").info("foreign")
    assert handled == ["aiohttp.server"]
    assert [line["event"] for line in lines(stream)] == ["token.refreshed", "request", "foreign"]


def test_a_line_is_one_write_without_a_flush_on_a_line_buffered_stream() -> None:
    stream = RecordingStream(line_buffering=True)
    configure_logging(LoggingConfig(format="json"), stream=stream)  # type: ignore[arg-type]
    emit_refresh(Auditor())
    [text] = stream.writes
    assert text.endswith("\n") and text.count("\n") == 1
    assert json.loads(text)["event"] == "token.refreshed"
    assert stream.flushes == 0


def test_any_other_stream_is_flushed_after_each_line() -> None:
    stream = RecordingStream(line_buffering=False)
    configure_logging(LoggingConfig(format="json"), stream=stream)  # type: ignore[arg-type]
    emit_refresh(Auditor())
    structlog.get_logger("mcp_oauthd.access").info("request")
    assert len(stream.writes) == 2
    assert stream.flushes == 2


def test_a_broken_stream_or_an_unrenderable_line_never_breaks_the_caller(
    capsys: pytest.CaptureFixture[str],
) -> None:
    closed = io.StringIO()
    configure_logging(LoggingConfig(format="json"), stream=closed)
    closed.close()
    emit_refresh(Auditor())  # no exception
    assert "Logging error" in capsys.readouterr().err

    stream = io.StringIO()
    configure_logging(LoggingConfig(format="json"), stream=stream)
    cycle: list[object] = []
    cycle.append(cycle)
    log = structlog.get_logger("mcp_oauthd.t")
    log.info("deep", value={"a": {"b": {"c": {"d": {"e": cycle}}}}})
    log.info("next")
    assert [line["event"] for line in lines(stream)] == ["next"]
    assert "could not be rendered" in capsys.readouterr().err


def test_a_console_traceback_never_shows_local_variables() -> None:
    """rich's traceback formatter (used by structlog when rich is installed) prints each
    frame's locals; a token in a local must not reach the console log."""
    stream = io.StringIO()
    configure_logging(LoggingConfig(format="console"), stream=stream)
    log = structlog.get_logger("mcp_oauthd.test")

    def fail(access_token: str) -> None:
        raise RuntimeError("boom")

    value = "-".join(["mcpat_local", "variable", "value"])  # not in any source line
    try:
        fail(value)
    except RuntimeError:
        log.exception("failed")
    assert "boom" in stream.getvalue()
    assert value not in stream.getvalue()

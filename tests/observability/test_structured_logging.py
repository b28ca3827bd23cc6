"""configure_logging: JSON lines, levels, request ids, stdlib routing, redaction."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from mcp_oauthd.config.models import LoggingConfig
from mcp_oauthd.observability.logging import (
    REDACTED,
    configure_logging,
    is_credential_key,
)

# Each test configures logging (process-wide): leave it as it was found.
pytestmark = pytest.mark.usefixtures("restore_logging")


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_structlog_events_are_json_lines_with_iso_timestamps() -> None:
    stream = io.StringIO()
    configure_logging(LoggingConfig(format="json"), stream=stream)
    structlog.get_logger("mcp_oauthd.test").info("hello", client_id="c1")
    [line] = lines(stream)
    assert line["event"] == "hello"
    assert line["client_id"] == "c1"
    assert line["level"] == "info"
    assert line["logger"] == "mcp_oauthd.test"
    assert str(line["timestamp"]).endswith("Z")


def test_levels_below_the_configured_one_are_dropped() -> None:
    stream = io.StringIO()
    configure_logging(LoggingConfig(level="warning", format="json"), stream=stream)
    log = structlog.get_logger("x")
    log.info("quiet")
    logging.getLogger("aiohttp.access").info("quiet too")
    log.warning("loud")
    assert [line["event"] for line in lines(stream)] == ["loud"]


def test_a_bound_request_id_appears_on_every_line_including_stdlib_ones() -> None:
    stream = io.StringIO()
    configure_logging(LoggingConfig(format="json"), stream=stream)
    structlog.contextvars.bind_contextvars(request_id="req-123")
    structlog.get_logger("a").info("one")
    logging.getLogger("aiohttp.server").error("two %s", "args")
    out = lines(stream)
    assert [line["event"] for line in out] == ["one", "two args"]
    assert all(line["request_id"] == "req-123" for line in out)
    assert out[1]["logger"] == "aiohttp.server"


def test_credential_fields_are_redacted_at_any_depth() -> None:
    stream = io.StringIO()
    configure_logging(LoggingConfig(format="json"), stream=stream)
    structlog.get_logger("a").info(
        "request",
        access_token="at-secret",
        client_secret="cs",
        code="the-code",
        code_verifier="v",
        headers={"Authorization": "Bearer abc", "Cookie": "sid=1", "Accept": "json"},
        status_code=200,
        token_type="Bearer",
        code_challenge_method="S256",
        note="sent Bearer abc.def to upstream",
    )
    [line] = lines(stream)
    for key in ("access_token", "client_secret", "code", "code_verifier"):
        assert line[key] == REDACTED
    assert line["headers"] == {"Authorization": REDACTED, "Cookie": REDACTED, "Accept": "json"}
    assert line["status_code"] == 200
    assert line["token_type"] == "Bearer"
    assert line["code_challenge_method"] == "S256"
    assert line["note"] == f"sent Bearer {REDACTED} to upstream"
    assert "abc" not in stream.getvalue()


@pytest.mark.parametrize(
    "key",
    [
        "token",
        "refreshToken",
        "id_token",
        "password",
        "client_assertion",
        "set-cookie",
        "api_key",
        "upstream_secret",
        "authorization_code",
    ],
)
def test_names_that_look_like_credentials_are_recognised(key: str) -> None:
    assert is_credential_key(key)


@pytest.mark.parametrize(
    "key",
    [
        "event",
        "client_id",
        "status_code",
        "token_type",
        "grant_type",
        "scope",
        "subject",
        "code_challenge_method",
        "token_endpoint_auth_method",
        "expires_in",
    ],
)
def test_ordinary_names_are_left_alone(key: str) -> None:
    assert not is_credential_key(key)


def test_auto_format_uses_json_when_the_stream_is_not_a_tty() -> None:
    stream = io.StringIO()
    configure_logging(LoggingConfig(format="auto"), stream=stream)
    structlog.get_logger("a").info("x")
    assert lines(stream)[0]["event"] == "x"


def test_console_format_renders_readable_text() -> None:
    stream = io.StringIO()
    configure_logging(LoggingConfig(format="console"), stream=stream)
    structlog.get_logger("a").info("hello", password="pw123")
    text = stream.getvalue()
    assert "hello" in text
    assert "pw123" not in text


def test_configuring_twice_does_not_duplicate_lines() -> None:
    stream = io.StringIO()
    configure_logging(LoggingConfig(format="json"), stream=io.StringIO())
    configure_logging(LoggingConfig(format="json"), stream=stream)
    structlog.get_logger("a").info("once")
    assert len(lines(stream)) == 1

"""Auditor: one structured event per security fact, never a credential."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from mcp_oauthd.config.models import LoggingConfig
from mcp_oauthd.observability.logging import configure_logging
from mcp_oauthd.security.audit import Auditor


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    out = io.StringIO()
    configure_logging(LoggingConfig(format="json"), stream=out)
    yield out
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def test_an_event_is_logged_once_with_audit_true(stream: io.StringIO) -> None:
    Auditor().emit("token.issued", client_id="c1", subject="alice", resource="https://r")
    [line] = [json.loads(x) for x in stream.getvalue().splitlines()]
    assert line["event"] == "token.issued"
    assert line["audit"] is True
    assert line["logger"] == "mcp_oauthd.audit"
    assert line["client_id"] == "c1"
    assert line["level"] == "info"


def test_refusals_and_reuse_are_logged_as_warnings(stream: io.StringIO) -> None:
    auditor = Auditor()
    auditor.emit("refresh.reused", grant_id="g")
    auditor.emit("login.refused", reason="policy")
    levels = [json.loads(x)["level"] for x in stream.getvalue().splitlines()]
    assert levels == ["warning", "warning"]


def test_events_are_remembered_in_a_bounded_ring() -> None:
    auditor = Auditor(max_events=3)
    for i in range(5):
        auditor.emit("registration", n=i)
    assert [e["n"] for e in auditor.events] == [2, 3, 4]
    assert auditor.find("registration")[-1]["audit"] is True


def test_credential_fields_are_dropped_and_noted(stream: io.StringIO) -> None:
    auditor = Auditor()
    auditor.emit("token.issued", access_token="at-SECRET", code="c-SECRET", client_id="c1")
    [event] = auditor.events
    assert "access_token" not in event
    assert "code" not in event
    assert event["dropped_fields"] == ["access_token", "code"]
    assert "SECRET" not in stream.getvalue()


def test_user_ids_can_be_replaced_by_a_keyed_hash() -> None:
    auditor = Auditor(hash_user_ids=True, hash_key=b"k" * 32)
    auditor.emit("token.issued", subject="alice", user="alice", client_id="c1")
    [event] = auditor.events
    assert event["subject"] == event["user"]
    assert str(event["subject"]).startswith("h:")
    assert "alice" not in json.dumps(event)
    assert event["client_id"] == "c1"
    other = Auditor(hash_user_ids=True, hash_key=b"x" * 32)
    assert other.hash_user_id("alice") != event["subject"]

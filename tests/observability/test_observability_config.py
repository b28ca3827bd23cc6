"""The `observability:` config section and what check-config says about it."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from mcp_oauthd.cli import main
from mcp_oauthd.config.loader import check_warnings
from mcp_oauthd.config.models import Config
from tests.conftest import base_config, free_port

ENDPOINT_FIELD = "observability.tracing.otlp_endpoint"


def config(**overrides: Any) -> Config:
    # No local users: check_warnings would spend argon2 time testing them for "demo".
    return base_config(8080, provider={"type": "local", "users": []}, **overrides)


def otlp(endpoint: str, **more: Any) -> Config:
    return config(
        observability={"tracing": {"exporter": "otlp", "otlp_endpoint": endpoint, **more}}
    )


def endpoint_warnings(config: Config) -> list[str]:
    return [w.risk for w in check_warnings(config) if w.field == ENDPOINT_FIELD]


@pytest.fixture
def listening() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_the_defaults_are_metrics_on_the_main_listener_and_no_tracing() -> None:
    obs = config().observability
    assert obs.metrics.enabled
    assert obs.metrics.port is None
    assert not obs.metrics.expose_client_ids
    assert obs.tracing.exporter == "none"
    assert endpoint_warnings(config()) == []


def test_a_malformed_exporter_endpoint_is_a_warning_not_an_error() -> None:
    [risk] = endpoint_warnings(otlp("collector:4318/v1/traces"))
    assert "not an http(s) URL" in risk


def test_an_endpoint_without_the_traces_path_is_flagged(listening: int) -> None:
    [risk] = endpoint_warnings(otlp(f"http://127.0.0.1:{listening}"))
    assert "/v1/traces" in risk


def test_an_unreachable_loopback_collector_is_flagged() -> None:
    [risk] = endpoint_warnings(otlp(f"http://127.0.0.1:{free_port()}/v1/traces"))
    assert "nothing listens" in risk


def test_a_listening_loopback_collector_is_fine(listening: int) -> None:
    assert endpoint_warnings(otlp(f"http://127.0.0.1:{listening}/v1/traces")) == []


def test_plain_http_to_a_remote_collector_is_flagged_and_not_contacted() -> None:
    # 192.0.2.0/24 is TEST-NET-1: a connect attempt would hang, so this also shows none is made.
    [risk] = endpoint_warnings(otlp("http://192.0.2.10:4318/v1/traces"))
    assert "unencrypted" in risk
    assert endpoint_warnings(otlp("https://otel.example.com/v1/traces")) == []


def test_metrics_on_a_public_listener_are_flagged() -> None:
    public = config(server={"host": "0.0.0.0", "port": 8080})
    assert "observability.metrics.port" in {w.field for w in check_warnings(public)}
    separate = config(
        server={"host": "0.0.0.0", "port": 8080},
        observability={"metrics": {"port": 9090}},
    )
    assert "observability.metrics.port" not in {w.field for w in check_warnings(separate)}


def test_the_metrics_port_cannot_be_the_server_port() -> None:
    with pytest.raises(ValidationError, match=r"must differ from server\.port"):
        config(observability={"metrics": {"port": 8080}})


def test_otlp_headers_are_secrets_that_never_show_in_a_repr() -> None:
    config = otlp(
        "https://otel.example.com/v1/traces", otlp_headers={"x-api-key": "hunter2-api-key"}
    )
    headers = config.observability.tracing.otlp_headers
    assert headers["x-api-key"].get_secret_value() == "hunter2-api-key"
    assert "hunter2" not in repr(config)


def test_check_config_prints_the_exporter_warning_and_still_succeeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "issuer: http://127.0.0.1:8080\n"
        "storage: {type: memory}\n"
        "resources: [{uri: 'http://127.0.0.1:9999/mcp'}]\n"
        "observability:\n"
        "  tracing: {exporter: otlp, otlp_endpoint: 'not a url'}\n",
        encoding="utf-8",
    )
    assert main(["check-config", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"warning: {ENDPOINT_FIELD}:" in out

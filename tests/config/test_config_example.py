"""config.example.yaml runs as-is and documents every key of the model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mcp_oauthd.config.loader import load_config, load_defaults_text
from mcp_oauthd.config.reference import iter_field_names

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config.example.yaml"


@pytest.fixture
def in_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the example's sqlite path is relative to the cwd


@pytest.mark.usefixtures("in_repo_root")
def test_the_example_config_validates_as_is() -> None:
    config = load_config(EXAMPLE, environ={})
    assert config.issuer == "http://localhost:8080"


@pytest.mark.usefixtures("in_repo_root")
def test_the_example_runs_the_same_setup_as_the_embedded_defaults() -> None:
    example = load_config(EXAMPLE, environ={})
    defaults = load_config(None, environ={})
    assert example.issuer == defaults.issuer
    assert example.storage == defaults.storage
    assert example.provider == defaults.provider
    assert [r.uri for r in example.resources] == [r.uri for r in defaults.resources]
    assert [c.redirect_uris for c in example.clients] == [c.redirect_uris for c in defaults.clients]


def test_the_example_mentions_every_key_of_the_model() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    missing = sorted(
        f"{section}.{key}".lstrip(".")
        for section, key in iter_field_names()
        if not re.search(rf"(^|[\s{{,#-]){re.escape(key)}:", text, re.MULTILINE)
    )
    assert missing == []


def test_the_example_shows_every_provider_and_storage_type() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    for kind in ("memory", "sqlite", "redis", "local", "oidc", "google", "github"):
        assert re.search(rf"type: {kind}\b", text)


def test_the_embedded_defaults_are_packaged_yaml() -> None:
    assert "issuer: http://localhost:8080" in load_defaults_text()

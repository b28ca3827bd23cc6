"""A plugin's section of the YAML config is validated by its own model, like a built-in's:
same strictness, same error format, dotted paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcp_oauthd.config.loader import ConfigError, Problem, load_config
from mcp_oauthd.config.models import Config, PluginConfig

ISSUER = "issuer: https://auth.example.com\nresources:\n  - uri: https://mcp.example.com/mcp\n"


def write(tmp_path: Path, sections: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(ISSUER + sections, encoding="utf-8")
    return path


def problems_of(path: Path) -> list[Problem]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    return caught.value.problems


pytestmark = pytest.mark.usefixtures("example_installed")


def test_a_config_naming_the_example_provider_and_storage_validates(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "provider:\n"
        "  type: fixed_user\n"
        "  username: ada\n"
        "  email: ${ADA_EMAIL}\n"
        "  code_ttl: 2m\n"
        "storage:\n"
        f"  type: journal\n  path: {tmp_path}/journal.jsonl\n",
    )

    config = load_config(path, environ={"ADA_EMAIL": "ada@example.com"})

    provider, storage = config.provider, config.storage
    assert isinstance(provider, PluginConfig)
    assert type(provider).__name__ == "FixedUserConfig"
    assert provider.model_dump() == {
        "type": "fixed_user",
        "username": "ada",
        "email": "ada@example.com",
        "email_verified": False,
        "name": None,
        "groups": [],
        "code_ttl": 120.0,
    }
    assert type(storage).__name__ == "JournalStorageConfig"
    assert storage.model_dump()["path"] == tmp_path / "journal.jsonl"


def test_a_plugin_section_is_frozen_like_every_section(tmp_path: Path) -> None:
    path = write(tmp_path, "provider:\n  type: fixed_user\n  username: ada\n")
    provider = load_config(path, environ={}).provider

    with pytest.raises(ValueError, match="frozen"):
        provider.type = "local"  # type: ignore[misc]


def test_a_missing_required_plugin_key_is_reported_with_its_path_and_its_plugin(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "provider:\n  type: fixed_user\n  email: ada@example.com\n")

    assert problems_of(path) == [
        Problem(
            "provider.username",
            "required key is missing",
            "add it; see plugin mcp-oauthd-example-plugins 0.1.0",
        )
    ]


def test_a_misspelt_plugin_key_suggests_the_plugins_own_key(tmp_path: Path) -> None:
    path = write(tmp_path, "provider:\n  type: fixed_user\n  username: ada\n  emial: a@b.c\n")

    assert problems_of(path) == [
        Problem(
            "provider.emial",
            "unknown key",
            "did you mean 'email'? See plugin mcp-oauthd-example-plugins 0.1.0",
        )
    ]


def test_plugin_errors_are_reported_together_with_every_other_problem(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "provider:\n  type: fixed_user\n  username: ''\n  code_ttl: 1h\n"
        "storage:\n  type: journal\n  path: /no/such/directory/journal.jsonl\n"
        "tokens:\n  access_token_ttl: soon\n",
    )

    problems = problems_of(path)

    assert [p.path for p in problems] == [
        "storage.path",
        "provider.username",
        "provider.code_ttl",
        "tokens.access_token_ttl",
    ]
    assert problems[0].message == "directory /no/such/directory does not exist"
    assert problems[0].hint == (
        "create it or choose another path; see plugin mcp-oauthd-example-plugins 0.1.0"
    )
    assert problems[2].hint.startswith("lower it; see plugin")
    assert "see plugin" not in problems[3].hint  # a built-in section names no plugin


def test_a_plugin_error_never_echoes_the_value(tmp_path: Path) -> None:
    path = write(tmp_path, "provider:\n  type: fixed_user\n  username: [hunter2-secret]\n")

    [problem] = problems_of(path)

    assert problem.path == "provider.username"
    assert "hunter2-secret" not in str(problem)


def test_a_config_built_in_code_accepts_a_plugin_section_object() -> None:
    from mcp_oauthd_example.fixed_user import FixedUserConfig

    config = Config.model_validate(
        {
            "issuer": "https://auth.example.com",
            "resources": [{"uri": "https://mcp.example.com/mcp"}],
            "provider": FixedUserConfig(username="ada"),
            "storage": {"type": "memory"},
        }
    )

    assert config.provider == FixedUserConfig(username="ada")

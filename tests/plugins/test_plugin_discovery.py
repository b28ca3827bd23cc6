"""Provider and storage types come from entry points: the built-ins and installed plugins
alike; ``mcp-oauthd plugins`` shows where each came from; a broken plugin is reported and
never takes the built-ins down."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from mcp_oauthd import plugins
from mcp_oauthd.cli import main
from mcp_oauthd.clock import FakeClock
from mcp_oauthd.config.loader import ConfigError, load_config
from mcp_oauthd.config.models import LocalProviderConfig, MemoryStorageConfig
from mcp_oauthd.providers import LocalProvider, build_provider
from mcp_oauthd.storage import StorageError, build_storage
from mcp_oauthd.storage.memory import MemoryStorage
from tests.plugins.conftest import EXAMPLE_DIST, on_path, subprocess_env, write_distribution

BROKEN_MODULE = 'raise RuntimeError("the SAML library is not installed")\n'


def minimal_yaml(tmp_path: Path, provider: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        "issuer: https://auth.example.com\n"
        "storage: {type: memory}\n"
        f"provider:\n{provider}"
        "resources:\n  - uri: https://mcp.example.com/mcp\n",
        encoding="utf-8",
    )
    return path


def problems_of(path: Path) -> list[tuple[str, str, str]]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    return [(p.path, p.message, p.hint) for p in caught.value.problems]


def run_cli(*args: str, site: Path) -> subprocess.CompletedProcess[str]:
    """``mcp-oauthd`` in a new process that finds the plugins in ``site``."""
    return subprocess.run(
        [sys.executable, "-m", "mcp_oauthd", *args],
        capture_output=True,
        text=True,
        env=subprocess_env(site),
        timeout=60,
        check=False,
    )


# --------------------------------------------------------------------------- built-ins
def test_the_built_in_types_are_registered_as_entry_points_of_mcp_oauthd() -> None:
    declared = {
        group: {
            ep.name: (ep.value, ep.dist.name if ep.dist else None)
            for ep in entry_points(group=group)
        }
        for group in (plugins.PROVIDER_GROUP, plugins.STORAGE_GROUP)
    }

    for name in ("local", "oidc", "google", "github"):
        assert declared[plugins.PROVIDER_GROUP][name] == (
            f"mcp_oauthd.providers.{name}:PLUGIN",
            "mcp-oauthd",
        )
    for name in ("memory", "sqlite", "redis"):
        assert declared[plugins.STORAGE_GROUP][name] == (
            f"mcp_oauthd.storage.{name}:PLUGIN",
            "mcp-oauthd",
        )


def test_build_provider_and_build_storage_go_through_the_registry() -> None:
    plugins.reset()

    provider = build_provider(
        LocalProviderConfig(),
        issuer="https://a.example",
        storage=MemoryStorage(),
        clock=FakeClock(),
    )
    storage = build_storage(MemoryStorageConfig())

    assert isinstance(provider, LocalProvider)
    assert isinstance(storage, MemoryStorage)
    assert plugins.providers.loaded("local") is not None
    assert plugins.storage.loaded("memory") is not None


def test_the_plugins_command_lists_the_built_in_types(capsys: pytest.CaptureFixture[str]) -> None:
    plugins.reset()

    status = main(["plugins"])

    out = capsys.readouterr().out
    assert status == 0
    for name in ("local", "oidc", "google", "github", "memory", "sqlite", "redis"):
        assert f" {name} " in out
    assert "mcp-oauthd (built in)" in out


# --------------------------------------------------------------------------- the example
def test_the_plugins_command_lists_the_example_types_with_their_distribution(
    example_site: Path,
) -> None:
    result = run_cli("plugins", site=example_site)

    assert result.returncode == 0, result.stderr
    rows = {line.split()[1]: line for line in result.stdout.splitlines()[1:] if line.strip()}
    assert rows["fixed_user"].split()[:4] == ["provider", "fixed_user", EXAMPLE_DIST, "0.1.0"]
    assert rows["journal"].split()[:4] == ["storage", "journal", EXAMPLE_DIST, "0.1.0"]
    assert "mcp_oauthd_example.fixed_user:PLUGIN" in rows["fixed_user"]


def test_the_plugins_command_speaks_json_for_scripts(
    example_installed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["plugins", "--output", "json"])

    assert status == 0
    data = json.loads(capsys.readouterr().out)
    by_type = {row["type"]: row for row in data["types"]}
    assert by_type["fixed_user"] == {
        "kind": "provider",
        "type": "fixed_user",
        "distribution": EXAMPLE_DIST,
        "version": "0.1.0",
        "builtin": False,
        "target": "mcp_oauthd_example.fixed_user:PLUGIN",
        "config_model": "mcp_oauthd_example.fixed_user.FixedUserConfig",
    }
    assert by_type["journal"]["kind"] == "storage"
    assert by_type["local"]["builtin"] is True
    assert data["failures"] == []


def test_plugin_modules_are_imported_only_when_their_type_is_used(
    example_installed: Path,
) -> None:
    assert "fixed_user" in plugins.providers.names()
    assert plugins.providers.loaded("fixed_user") is None

    descriptor = plugins.providers.get("fixed_user")

    assert plugins.providers.loaded("fixed_user") is descriptor
    assert descriptor.config_model.__name__ == "FixedUserConfig"


# --------------------------------------------------------------------------- broken plugins
@pytest.fixture
def broken_plugin(tmp_path: Path) -> Path:
    return write_distribution(
        tmp_path / "broken-site",
        "saml-bridge",
        "0.3",
        entry_points={plugins.PROVIDER_GROUP: {"saml_bridge": "saml_bridge_plugin:PLUGIN"}},
        modules={"saml_bridge_plugin": BROKEN_MODULE},
    )


def test_naming_a_plugin_that_fails_to_import_is_a_clear_config_error(
    broken_plugin: Path, tmp_path: Path
) -> None:
    config = minimal_yaml(tmp_path, "  type: saml_bridge\n  tenant: acme\n")

    with on_path(broken_plugin):
        problems = problems_of(config)

    [(path, message, hint)] = problems
    assert path == "provider.type"
    assert message == (
        "provider type 'saml_bridge' comes from plugin saml-bridge 0.3 which failed to load: "
        "RuntimeError: the SAML library is not installed"
    )
    assert "mcp-oauthd plugins" in hint


def test_a_broken_plugin_leaves_the_built_ins_working(broken_plugin: Path, tmp_path: Path) -> None:
    local = minimal_yaml(tmp_path, "  type: local\n")

    with on_path(broken_plugin):
        with pytest.raises(plugins.PluginLoadFailed):
            plugins.providers.get("saml_bridge")
        config = load_config(local, environ={})
        provider = build_provider(
            config.provider, issuer=config.issuer, storage=MemoryStorage(), clock=FakeClock()
        )
        storage = build_storage(config.storage)

    assert isinstance(provider, LocalProvider)
    assert isinstance(storage, MemoryStorage)


def test_the_plugins_command_reports_a_broken_plugin_and_fails(
    broken_plugin: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with on_path(broken_plugin):
        status = main(["plugins"])

    out = capsys.readouterr().out
    assert status == 1
    assert " local " in out  # the built-ins are still listed
    assert (
        "provider type 'saml_bridge' from saml-bridge 0.3: "
        "RuntimeError: the SAML library is not installed"
    ) in out


def test_an_unknown_type_lists_every_available_type_and_the_broken_plugins(
    broken_plugin: Path, example_site: Path, tmp_path: Path
) -> None:
    config = minimal_yaml(tmp_path, "  type: ldap\n")

    with on_path(broken_plugin, example_site):
        [(path, message, hint)] = problems_of(config)

    assert (path, message) == ("provider.type", "unknown type")
    assert hint.startswith("use one of local, oidc, google, github, fixed_user;")
    assert "saml_bridge (from saml-bridge 0.3: RuntimeError: the SAML library" in hint


def test_a_misspelt_plugin_type_suggests_the_closest_one(
    example_installed: Path, tmp_path: Path
) -> None:
    config = minimal_yaml(tmp_path, "  type: fixed_usr\n  username: ada\n")

    assert problems_of(config) == [("provider.type", "unknown type", "did you mean 'fixed_user'?")]


def test_a_plugin_cannot_replace_a_built_in_type(tmp_path: Path) -> None:
    impostor = write_distribution(
        tmp_path / "impostor-site",
        "totally-local",
        "1.0",
        entry_points={plugins.STORAGE_GROUP: {"memory": "impostor_plugin:PLUGIN"}},
        modules={"impostor_plugin": "raise AssertionError('must never be imported')\n"},
    )

    with on_path(impostor):
        backend = build_storage(MemoryStorageConfig())
        failures = plugins.storage.failures()

    assert isinstance(backend, MemoryStorage)
    assert [(f.name, f.distribution) for f in failures] == [("memory", "totally-local")]
    assert "cannot replace" in failures[0].error


def test_an_entry_point_that_is_not_a_descriptor_is_reported(tmp_path: Path) -> None:
    odd = write_distribution(
        tmp_path / "odd-site",
        "odd-plugin",
        "2.0",
        entry_points={plugins.STORAGE_GROUP: {"postgres": "odd_plugin:PLUGIN"}},
        modules={"odd_plugin": "PLUGIN = object()\n"},
    )

    with on_path(odd), pytest.raises(StorageError) as caught:
        build_storage(MemoryStorageConfig().model_copy(update={"type": "postgres"}))

    assert str(caught.value) == (
        "storage type 'postgres' comes from plugin odd-plugin 2.0 which failed to load: "
        "odd_plugin:PLUGIN must be a StoragePlugin, not 'object'"
    )


def test_two_distributions_declaring_one_type_make_it_fail_to_load(tmp_path: Path) -> None:
    sites = [
        write_distribution(
            tmp_path / f"site-{dist}",
            dist,
            "1.0",
            entry_points={plugins.PROVIDER_GROUP: {"ldap": f"{dist.replace('-', '_')}:PLUGIN"}},
            modules={dist.replace("-", "_"): "raise AssertionError('must never be imported')\n"},
        )
        for dist in ("ldap-a", "ldap-b")
    ]

    with on_path(*sites), pytest.raises(plugins.PluginLoadFailed) as caught:
        plugins.providers.get("ldap")

    assert str(caught.value) == (
        "provider type 'ldap' is declared by several plugins (ldap-a 1.0, ldap-b 1.0); "
        "uninstall all but one"
    )

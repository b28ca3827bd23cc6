"""deploy/docker-compose.yml and deploy/systemd: the files parse, their mcp-oauthd configs
pass the real loader with exactly the variables the recipe provides, and what they name
(files, ports, mount paths, credentials, sandbox settings) matches the image, the nginx
config and the code."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.recipes import (
    DEPLOY,
    ROOT,
    STATE_DIR,
    build_app,
    load_recipe_config,
    referenced_env,
    required_env,
    route_exists,
    yaml_documents,
)
from tests.deploy.test_dockerfile import parse_dockerfile

COMPOSE = DEPLOY / "docker-compose.yml"
UNIT = DEPLOY / "systemd" / "mcp-oauthd.service"


def test_every_yaml_file_under_deploy_parses() -> None:
    files = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])
    assert len(files) >= 15
    for path in files:
        assert yaml_documents(path), path


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def test_compose_runs_mcp_oauthd_redis_nginx_and_an_example_mcp_server(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert set(services) == {"mcp-oauthd", "redis", "nginx", "mcp-server"}
    oauthd = services["mcp-oauthd"]
    assert (COMPOSE.parent / oauthd["build"]["context"] / oauthd["build"]["dockerfile"]).is_file()
    example = COMPOSE.parent / services["mcp-server"]["build"]["context"]
    assert (example / "server.py").is_file()
    assert "COPY server.py" in services["mcp-server"]["build"]["dockerfile_inline"]
    # Only nginx is published.
    assert [s for s, spec in services.items() if "ports" in spec] == ["nginx"]


def test_compose_mounts_match_the_image(compose: dict[str, Any]) -> None:
    runtime = parse_dockerfile((ROOT / "Dockerfile").read_text())[-1]
    oauthd = compose["services"]["mcp-oauthd"]
    mounts = {}
    for volume in oauthd["volumes"]:
        source, target, *_ = volume.split(":")
        mounts[target] = source
    assert (COMPOSE.parent / mounts[runtime.env()["MCP_OAUTHD_CONFIG"]]).is_file()
    assert mounts[STATE_DIR] in compose["volumes"]
    assert oauthd["read_only"] is True
    assert oauthd["tmpfs"] == ["/tmp"]
    nginx = compose["services"]["nginx"]
    source, target, *_ = nginx["volumes"][0].split(":")
    assert target == "/etc/nginx/nginx.conf"
    assert (COMPOSE.parent / source).is_file()


async def test_the_compose_config_is_valid_with_the_variables_compose_sets(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    text = (DEPLOY / "compose" / "mcp-oauthd.yaml").read_text()
    environment = compose["services"]["mcp-oauthd"]["environment"]
    # Every variable the config needs without a default is set by compose.
    assert required_env(text) <= set(environment)
    # ... and compose refuses to start without the secrets (`:?`) instead of running
    # with an empty key.
    for name in ("MCP_OAUTHD_ENCRYPTION_KEY", "MCP_OAUTHD_COOKIE_SECRET"):
        assert re.fullmatch(r"\$\{" + name + r":\?.+\}", environment[name])
    config = load_recipe_config(text, tmp_path)
    assert config.storage.type == "redis"
    assert config.proxy.trusted_hops == 1
    # nginx.conf's upstreams are where mcp-oauthd and the MCP server listen.
    nginx = (DEPLOY / "compose" / "nginx.conf").read_text()
    assert f"server mcp-oauthd:{config.server.port};" in nginx
    port = compose["services"]["mcp-server"]["environment"]["PORT"]
    assert f"server mcp-server:{port};" in nginx
    published = compose["services"]["nginx"]["ports"][0].split(":")
    assert f"listen {published[-1]};" in nginx
    assert config.issuer == f"http://localhost:{published[0]}"
    assert config.resources[0].uri == config.issuer + "/mcp"
    app = build_app(config)
    assert await route_exists(app, "/auth/verify")
    assert await route_exists(app, "/.well-known/oauth-protected-resource/mcp")
    assert "proxy_pass http://mcp_oauthd/auth/verify;" in nginx


def test_make_env_prints_what_compose_needs(compose: dict[str, Any], tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(DEPLOY / "compose" / "make-env.py")],
        capture_output=True,
        text=True,
        check=True,
    )
    values = dict(line.split("=", 1) for line in done.stdout.splitlines())
    assert set(values) == {"MCP_OAUTHD_ENCRYPTION_KEY", "MCP_OAUTHD_COOKIE_SECRET"}
    assert len(values["MCP_OAUTHD_COOKIE_SECRET"]) >= 32
    text = (DEPLOY / "compose" / "mcp-oauthd.yaml").read_text()
    config = load_recipe_config(text, tmp_path, values)
    assert (
        config.security.encryption_keys[0].key.get_secret_value()
        == values["MCP_OAUTHD_ENCRYPTION_KEY"]
    )


# ------------------------------------------------------------------------------ systemd
@pytest.fixture(scope="module")
def unit() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser


def credentials(text: str) -> list[str]:
    return re.findall(r"^LoadCredential=([\w-]+):", text, flags=re.MULTILINE)


def test_the_systemd_unit_runs_serve_with_its_config_and_state_directory(
    unit: configparser.RawConfigParser, tmp_path: Path
) -> None:
    service = unit["Service"]
    exec_start = service["ExecStart"].split()
    assert exec_start[1:3] == ["serve", "--config"]
    config_path = exec_start[3]
    assert config_path.startswith(f"/etc/{service['ConfigurationDirectory']}/")
    assert f"/var/lib/{service['StateDirectory']}" == STATE_DIR
    text = (DEPLOY / "systemd" / "config.yaml").read_text()
    creds = tmp_path / "credentials"
    creds.mkdir()
    names = credentials(UNIT.read_text())
    for name in names:
        value = "bmV3LWtleS1uZXcta2V5LW5ldy1rZXktbmV3LWtleSE" if "key" in name else "x" * 40
        (creds / name).write_text(value)
    # The config reads exactly the credentials the unit loads, and nothing else from
    # the environment: systemd passes none.
    assert set(re.findall(r"\$\{CREDENTIALS_DIRECTORY\}/([\w-]+)", text)) == set(names)
    assert referenced_env(text) == {"CREDENTIALS_DIRECTORY"}
    config = load_recipe_config(text, tmp_path, {"CREDENTIALS_DIRECTORY": str(creds)})
    assert str(config.storage.path).startswith(str(tmp_path))  # i.e. under STATE_DIR
    assert config.security.state_dir is not None
    # SIGTERM drains within shutdown_timeout; systemd must wait longer than that.
    assert service["KillSignal"] == "SIGTERM"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"  # config reload
    assert float(service["TimeoutStopSec"]) > config.server.shutdown_timeout


def test_the_systemd_unit_is_sandboxed(unit: configparser.RawConfigParser) -> None:
    service = unit["Service"]
    expected = {
        "DynamicUser": "yes",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "RestrictSUIDSGID": "yes",
        "CapabilityBoundingSet": "",
        "UMask": "0077",
    }
    for key, value in expected.items():
        assert service.get(key) == value, key
    assert "AF_INET" in service["RestrictAddressFamilies"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_rates_the_unit_exposure_as_low() -> None:
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--threshold=20", str(UNIT)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-2000:]


def test_the_admin_wrapper_runs_commands_with_the_units_credentials_and_user(
    unit: configparser.RawConfigParser,
) -> None:
    wrapper = (DEPLOY / "systemd" / "mcp-oauthd-admin").read_text()
    loaded = re.findall(r"LoadCredential=([\w-]+):", wrapper)
    assert sorted(loaded) == sorted(credentials(UNIT.read_text()))
    service = unit["Service"]
    assert f"-p User={service['User']}" in wrapper
    assert f"-p StateDirectory={service['StateDirectory']}" in wrapper
    assert service["ExecStart"].split()[0] + ' "$@"' in wrapper
    subprocess.run(["sh", "-n", str(DEPLOY / "systemd" / "mcp-oauthd-admin")], check=True)

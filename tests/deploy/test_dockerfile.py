"""The Dockerfile, read the way Docker reads it (no Docker engine needed): two stages, a
runtime stage that installs only the built wheels, a non-root user, the state volume, the
port the daemon listens on, a health check on a route that exists, exec-form entrypoint,
and a build context (.dockerignore) that carries the sources but no local state."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mcp_oauthd.config.models import ServerConfig
from tests.deploy.recipes import ROOT, STATE_DIR, build_app, load_recipe_config, route_exists

DOCKERFILE = ROOT / "Dockerfile"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"no {keyword} in stage {self.name}"
        return found[-1]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for args in self.all("ENV"):
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                values[key] = value
        return values


def parse_dockerfile(text: str) -> list[Stage]:
    """Instructions per stage; continuation lines joined, comments and directives skipped."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(parts[0], name))
        else:
            assert stages, f"{keyword} before FROM"
            stages[-1].instructions.append((keyword, args.strip()))
    return stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def runtime(stages: list[Stage]) -> Stage:
    return stages[-1]


def test_a_builder_stage_builds_wheels_and_the_runtime_installs_only_those(
    stages: list[Stage], runtime: Stage
) -> None:
    assert len(stages) >= 2
    builder = stages[0]
    assert builder.name == "builder"
    assert any("pip wheel" in r for r in builder.all("RUN"))
    assert runtime.base == "python:3.11-slim"
    installs = [r for r in runtime.all("RUN") if "pip install" in r]
    assert len(installs) == 1
    [install] = installs
    assert "--mount=type=bind,from=builder" in install
    assert "--no-index" in install  # nothing fetched at this point: only the built wheels
    # The package by name from those wheels: no editable install, no extras (test tools).
    assert install.split()[-1] == "mcp-oauthd"
    assert "[" not in install and " -e " not in install and "test" not in install
    # No source tree in the runtime image: only the baked default config is copied in.
    for copy in runtime.all("COPY"):
        source = copy.split()[0]
        assert source.startswith("deploy/docker/"), copy


def test_the_runtime_user_is_not_root(runtime: Stage) -> None:
    user = runtime.last("USER").split(":")[0]
    assert user not in ("root", "0")
    assert user.isdigit()  # numeric: Kubernetes runAsNonRoot can verify it
    # USER comes after every RUN, so nothing runs as root once it is set.
    keywords = [kw for kw, _ in runtime.instructions]
    assert max(i for i, kw in enumerate(keywords) if kw == "RUN") < keywords.index("USER")


def test_the_exposed_port_is_the_one_the_daemon_listens_on(runtime: Stage, tmp_path: Path) -> None:
    assert runtime.all("EXPOSE") == [str(ServerConfig.model_fields["port"].default)]
    config = load_recipe_config((ROOT / "deploy" / "docker" / "config.yaml").read_text(), tmp_path)
    assert str(config.server.port) == runtime.last("EXPOSE")


async def test_the_healthcheck_probes_a_route_the_app_serves(
    runtime: Stage, tmp_path: Path
) -> None:
    check = runtime.last("HEALTHCHECK")
    command = json.loads(check[check.index("CMD") + 3 :].strip())
    assert command[0] == "python"  # exec form, no shell needed in the image
    url_var = re.search(r"os\.environ\['(\w+)'\]", command[-1])
    assert url_var is not None
    url = runtime.env()[url_var.group(1)]
    assert url == f"http://127.0.0.1:{runtime.last('EXPOSE')}/healthz"
    config = load_recipe_config((ROOT / "deploy" / "docker" / "config.yaml").read_text(), tmp_path)
    assert await route_exists(build_app(config), "/healthz")


def test_the_entrypoint_is_exec_form_and_serves_by_default(runtime: Stage) -> None:
    assert json.loads(runtime.last("ENTRYPOINT")) == ["mcp-oauthd"]
    assert json.loads(runtime.last("CMD")) == ["serve"]
    assert runtime.last("STOPSIGNAL") == "SIGTERM"


def test_state_lives_in_a_volume_and_nothing_else_is_written(
    runtime: Stage, tmp_path: Path
) -> None:
    assert json.loads(runtime.last("VOLUME")) == [STATE_DIR]
    env = runtime.env()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"  # no __pycache__ on a read-only root
    assert env["MCP_OAUTHD_CONFIG"] == "/etc/mcp-oauthd/config.yaml"
    baked = [c for c in runtime.all("COPY") if c.split()[-1] == env["MCP_OAUTHD_CONFIG"]]
    assert baked
    text = (ROOT / baked[0].split()[0]).read_text()
    config = load_recipe_config(text, tmp_path)
    # The database and the generated keys both go to the volume.
    assert str(config.storage.path).startswith(str(tmp_path))  # i.e. under STATE_DIR
    assert f"path: {STATE_DIR}/" in text
    assert f"state_dir: {STATE_DIR}" in text
    assert config.server.host == "0.0.0.0"  # reachable through the published port


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a match on a parent directory counts."""
    excluded = False
    parts = path.split("/")
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!")
        for depth in range(1, len(parts) + 1):
            prefix = "/".join(parts[:depth])
            if fnmatch.fnmatch(prefix, pattern) or fnmatch.fnmatch(
                prefix, pattern.replace("**/", "")
            ):
                excluded = not negate
                break
    return excluded


def test_the_build_context_carries_the_sources_and_no_local_state(stages: list[Stage]) -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for stage in stages:
        for copy in stage.all("COPY"):
            if "--from=" in copy:
                continue
            for source in copy.split()[:-1]:
                assert (ROOT / source).exists(), source
                assert not dockerignore_excludes(source.rstrip("/"), patterns), source
    for private in (
        ".venv/bin/python",
        ".git/config",
        "mcp-oauthd.db",
        "mcp-oauthd.keys.json",
        "config.yaml",
        "tests/conftest.py",
        "mcp_oauthd/__pycache__/app.cpython-311.pyc",
        ".env",
    ):
        assert dockerignore_excludes(private, patterns), private

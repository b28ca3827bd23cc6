"""Plugin fixtures: the example plugin distribution pip-installed into a private directory
(never into the venv), and tiny distributions written by a test.

A directory on ``sys.path`` holding ``*.dist-info`` folders is all ``importlib.metadata``
needs to find entry points; ``plugins.reset()`` makes the registry look again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mcp_oauthd import plugins

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "plugins"
EXAMPLE_DIST = "mcp-oauthd-example-plugins"


@contextmanager
def on_path(*directories: Path) -> Iterator[None]:
    """Make ``directories`` importable and their distributions discoverable, then forget
    them again."""
    entries = [str(d) for d in directories]
    sys.path[:0] = entries
    plugins.reset()
    try:
        yield
    finally:
        for entry in entries:
            sys.path.remove(entry)
        plugins.reset()


def subprocess_env(*directories: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(str(d) for d in directories)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # leave no __pycache__ in the repository
    return env


@pytest.fixture(scope="session")
def example_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip install --target`` of examples/plugins: the real packaging path (build
    backend, entry points in the dist-info), offline and without touching the venv."""
    # Built from a copy: an in-tree build would leave build artefacts in the repository.
    source = tmp_path_factory.mktemp("example-source") / "plugins"
    shutil.copytree(
        EXAMPLE, source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info")
    )
    site = tmp_path_factory.mktemp("example-site")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "--target",
            str(site),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return site


@pytest.fixture
def example_installed(example_site: Path) -> Iterator[Path]:
    with on_path(example_site):
        yield example_site


def write_distribution(
    root: Path,
    name: str,
    version: str,
    *,
    entry_points: dict[str, dict[str, str]],
    modules: dict[str, str],
) -> Path:
    """Write an installed distribution (modules + a minimal dist-info) under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for module, source in modules.items():
        (root / f"{module}.py").write_text(source, encoding="utf-8")
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8"
    )
    lines = []
    for group, points in entry_points.items():
        lines.append(f"[{group}]")
        lines.extend(f"{key} = {value}" for key, value in points.items())
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root

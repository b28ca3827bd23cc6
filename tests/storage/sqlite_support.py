"""What the SQLite test modules share: the repository root (for subprocesses), a config
for a database file, the ``db_path`` / ``sqlite_storage`` fixtures (registered for
tests/storage by its conftest), and processes racing on one file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import mcp_oauthd
from mcp_oauthd.config.models import SqliteStorageConfig
from mcp_oauthd.storage.sqlite import SqliteStorage

REPO_ROOT = Path(next(iter(mcp_oauthd.__path__))).resolve().parent


def config(path: Path, busy_timeout: float = 5) -> SqliteStorageConfig:
    return SqliteStorageConfig(path=path, busy_timeout=busy_timeout)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "oauthd.db"


@pytest.fixture
async def sqlite_storage(db_path: Path) -> AsyncIterator[SqliteStorage]:
    backend = SqliteStorage(config(db_path))
    await backend.open()
    yield backend
    await backend.close()


def race_processes(script: str, argvs: list[list[str]], timeout: float = 120) -> list[Any]:
    """Run ``python -c script argv...`` once per argv, all started together: each process
    prints ``ready``, waits for a line on stdin (the barrier), races, and prints its
    result as JSON on its last line. Returns the results, in argv order."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), *sys.path])}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", script, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for argv in argvs
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready"
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        outputs = [worker.communicate(timeout=timeout) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]

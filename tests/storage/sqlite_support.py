"""What the SQLite test modules share: the repository root (for subprocesses), a config
for a database file, and the ``db_path`` / ``sqlite_storage`` fixtures (registered for
tests/storage by its conftest)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

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

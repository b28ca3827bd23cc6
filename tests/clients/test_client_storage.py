"""Storage of registered clients beyond the shared conformance suite: the SQLite migration
that indexes clients by the address they registered from."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from mcp_oauthd.config.models import SqliteStorageConfig
from mcp_oauthd.storage.sqlite import MIGRATIONS, SqliteStorage
from mcp_oauthd.testing.storage_conformance import NOW, make_client


async def test_clients_stored_before_the_ip_index_existed_are_counted_after_migrating(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    before = [m for m in MIGRATIONS if not any("registered_ip" in s for s in m)]
    old = make_client(registered_ip="192.0.2.10", expires_at=NOW + 3600)
    with sqlite3.connect(path, isolation_level=None) as conn:
        for migration in before:
            for statement in migration:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {len(before)}")
        conn.execute(
            "INSERT INTO clients (client_id, expires_at, data) VALUES (?, ?, ?)",
            (old.client_id, old.expires_at, old.model_dump_json()),
        )
    conn.close()
    storage = SqliteStorage(SqliteStorageConfig(path=path))
    await storage.open()
    try:
        assert await storage.count_clients_by_ip("192.0.2.10", NOW) == 1
        assert await storage.count_clients_by_ip("192.0.2.10", NOW + 7200) == 0
        assert await storage.get_client(old.client_id) == old
    finally:
        await storage.close()

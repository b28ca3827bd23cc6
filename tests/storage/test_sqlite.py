"""SQLite-specific behaviour: durability, several processes on one file, schema versions."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import stat
import textwrap
from pathlib import Path

import pytest

from mcp_oauthd.storage import (
    ConsumeStatus,
    GrantRevoked,
    RotateStatus,
    StorageError,
    StorageUnavailable,
)
from mcp_oauthd.storage import sqlite as sqlite_module
from mcp_oauthd.storage.sqlite import MIGRATIONS, SCHEMA_VERSION, SqliteStorage
from mcp_oauthd.testing.storage_conformance import (
    NOW,
    create_full_grant,
    make_access,
    make_client,
    make_code,
    make_consent,
    make_grant,
    rotate,
)
from tests.storage.sqlite_support import config, race_processes


@pytest.fixture
def storage(sqlite_storage: SqliteStorage) -> SqliteStorage:
    return sqlite_storage


def user_version(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


# --------------------------------------------------------------------------- the file
async def test_a_new_database_file_is_private_to_its_owner(
    storage: SqliteStorage, db_path: Path
) -> None:
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600
    wal = db_path.with_name(db_path.name + "-wal")
    if wal.exists():
        assert stat.S_IMODE(wal.stat().st_mode) == 0o600


async def test_the_database_runs_in_wal_mode_at_the_current_schema_version(
    storage: SqliteStorage, db_path: Path
) -> None:
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert user_version(db_path) == SCHEMA_VERSION


async def test_an_existing_file_keeps_its_permissions(db_path: Path) -> None:
    db_path.touch(mode=0o640)
    os.chmod(db_path, 0o640)
    backend = SqliteStorage(config(db_path))
    await backend.open()
    await backend.close()
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o640


async def test_operations_before_open_or_after_close_raise_storage_error(db_path: Path) -> None:
    backend = SqliteStorage(config(db_path))
    with pytest.raises(StorageError, match="not open"):
        await backend.ping()
    await backend.open()
    await backend.ping()
    await backend.close()
    await backend.close()  # idempotent
    with pytest.raises(StorageError, match="not open"):
        await backend.get_client("x")


# --------------------------------------------------------------------------- durability
async def test_state_survives_closing_and_reopening_the_file(db_path: Path) -> None:
    first = SqliteStorage(config(db_path))
    await first.open()
    client = make_client()
    await first.put_client(client)
    code = make_code()
    await first.put_code(code)
    assert (await first.consume_code(code.code_hash, NOW)).status is ConsumeStatus.OK
    grant, access, refresh = await create_full_grant(first)
    result, new_access, new_refresh = await rotate(
        first, refresh, grant, now=NOW + 10, grace=30, successor="enc"
    )
    assert result.status is RotateStatus.ROTATED
    consent = make_consent()
    await first.put_consent(consent)
    await first.put_ephemeral("login", "k", {"v": 1}, NOW + 600)
    tombstoned = make_grant()
    await first.revoke_grant(tombstoned.grant_id, NOW)
    await first.close()

    second = SqliteStorage(config(db_path))
    await second.open()
    try:
        assert await second.get_client(client.client_id) == client
        reused = await second.consume_code(code.code_hash, NOW + 1)
        assert reused.status is ConsumeStatus.REUSED
        assert await second.get_grant(grant.grant_id) == grant
        assert await second.get_access_token(access.token_hash) == access
        assert await second.get_access_token_by_jti(new_access.jti) == new_access
        assert await second.get_refresh_token(new_refresh.token_hash) == new_refresh
        grace, _, _ = await rotate(second, refresh, grant, now=NOW + 20, grace=30)
        assert (grace.status, grace.successor) == (RotateStatus.GRACE, "enc")
        assert await second.get_consent("alice", "client-1", consent.resource) == consent
        assert await second.take_ephemeral("login", "k", NOW) == {"v": 1}
        with pytest.raises(GrantRevoked):
            await second.create_grant(tombstoned, make_access(tombstoned), None)
    finally:
        await second.close()


# --------------------------------------------------------------------------- several writers
async def test_two_instances_on_one_file_racing_on_codes_have_exactly_one_winner_each(
    db_path: Path,
) -> None:
    a, b = SqliteStorage(config(db_path)), SqliteStorage(config(db_path))
    await a.open()
    await b.open()
    try:
        codes = [make_code() for _ in range(10)]
        for code in codes:
            await a.put_code(code)
        results = await asyncio.gather(
            *(s.consume_code(c.code_hash, NOW) for c in codes for s in (a, b, a, b))
        )
        for i in range(len(codes)):
            statuses = [r.status for r in results[i * 4 : i * 4 + 4]]
            assert statuses.count(ConsumeStatus.OK) == 1, statuses
    finally:
        await a.close()
        await b.close()


async def test_two_instances_on_one_file_rotate_a_refresh_token_once(db_path: Path) -> None:
    a, b = SqliteStorage(config(db_path)), SqliteStorage(config(db_path))
    await a.open()
    await b.open()
    try:
        grant, _, old = await create_full_grant(a)
        outcomes = await asyncio.gather(
            *(rotate(s, old, grant, now=NOW + 1, grace=30) for s in (a, b) * 5)
        )
        statuses = [o[0].status for o in outcomes]
        assert statuses.count(RotateStatus.ROTATED) == 1
        assert statuses.count(RotateStatus.GRACE) == 9
    finally:
        await a.close()
        await b.close()


WORKER = textwrap.dedent(
    """
    import asyncio, json, sys
    from pathlib import Path
    from mcp_oauthd.config.models import SqliteStorageConfig
    from mcp_oauthd.storage.sqlite import SqliteStorage

    async def main() -> None:
        path, hashes, now = Path(sys.argv[1]), json.loads(sys.argv[2]), float(sys.argv[3])
        storage = SqliteStorage(SqliteStorageConfig(path=path, busy_timeout=30))
        await storage.open()
        print("ready", flush=True)
        sys.stdin.readline()  # the barrier: every worker starts together
        wins = []
        for code_hash in hashes:
            result = await storage.consume_code(code_hash, now)
            wins.append(result.status.value)
        await storage.close()
        print(json.dumps(wins), flush=True)

    asyncio.run(main())
    """
)


async def test_separate_processes_racing_on_one_file_have_exactly_one_winner_per_code(
    db_path: Path,
) -> None:
    storage = SqliteStorage(config(db_path))
    await storage.open()
    codes = [make_code() for _ in range(20)]
    for code in codes:
        await storage.put_code(code)
    await storage.close()

    hashes = json.dumps([c.code_hash for c in codes])
    per_worker = race_processes(WORKER, [[str(db_path), hashes, str(NOW)]] * 4, timeout=60)
    for i in range(len(codes)):
        statuses = [wins[i] for wins in per_worker]
        assert statuses.count("ok") == 1, statuses
        assert statuses.count("reused") == len(per_worker) - 1, statuses


async def test_opening_waits_for_a_migration_another_process_is_running_on_a_new_file(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers starting together on a new file: while one holds the RESERVED lock (its
    migration), SQLite answers another's switch to WAL with SQLITE_BUSY at once instead
    of calling the busy handler. Opening must wait for it, not fail the worker."""
    # A new file, not yet WAL; committed from the storage's own thread (in `pause`).
    other = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("CREATE TABLE elsewhere (x)")
    pauses: list[float] = []

    def pause(seconds: float) -> None:  # the other process finishes while we wait
        pauses.append(seconds)
        if other.in_transaction:
            other.execute("COMMIT")

    monkeypatch.setattr(sqlite_module, "_pause", pause)
    storage = SqliteStorage(config(db_path))
    try:
        await storage.open()
        code = make_code()
        await storage.put_code(code)
        assert (await storage.consume_code(code.code_hash, NOW)).status is ConsumeStatus.OK
    finally:
        other.close()
        await storage.close()
    assert len(pauses) == 1
    mode = sqlite3.connect(db_path).execute("PRAGMA journal_mode").fetchone()
    assert mode == ("wal",)


async def test_opening_gives_up_with_storage_unavailable_when_the_switch_stays_locked(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("CREATE TABLE elsewhere (x)")
    clock = [0.0]

    def pause(seconds: float) -> None:  # fake time: each pause moves the clock on
        clock[0] += seconds

    monkeypatch.setattr(sqlite_module, "_pause", pause)
    monkeypatch.setattr(sqlite_module.time, "monotonic", lambda: clock[0])
    storage = SqliteStorage(config(db_path, busy_timeout=1))
    try:
        with pytest.raises(StorageUnavailable, match="busy"):
            await storage.open()
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert clock[0] >= 1.0


async def test_a_writer_blocked_past_busy_timeout_gets_storage_unavailable_without_details(
    db_path: Path,
) -> None:
    storage = SqliteStorage(config(db_path, busy_timeout=0))
    await storage.open()
    code = make_code()
    await storage.put_code(code)
    blocker = sqlite3.connect(db_path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        with pytest.raises(StorageUnavailable) as caught:
            await storage.consume_code(code.code_hash, NOW)
        message = str(caught.value)
        assert "busy" in message or "locked" in message
        assert code.code_hash not in message
        assert "SELECT" not in message.upper()
        assert caught.value.__cause__ is None
        blocker.execute("ROLLBACK")
        # Once the lock is gone the same instance works again.
        assert (await storage.consume_code(code.code_hash, NOW)).status is ConsumeStatus.OK
    finally:
        blocker.close()
        await storage.close()


# --------------------------------------------------------------------------- schema versions
async def test_a_file_from_schema_version_1_is_migrated_without_losing_data(
    db_path: Path,
) -> None:
    # Write a version-1 file by hand, the way an mcp-oauthd of that version left it.
    client = make_client()
    grant = make_grant()
    with sqlite3.connect(db_path, isolation_level=None) as conn:
        for statement in MIGRATIONS[0]:
            conn.execute(statement)
        conn.execute("PRAGMA user_version = 1")
        conn.execute(
            "INSERT INTO clients (client_id, expires_at, data) VALUES (?, ?, ?)",
            (client.client_id, None, client.model_dump_json()),
        )
        conn.execute(
            "INSERT INTO grants (grant_id, subject, client_id, expires_at, revoked_at, data) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                grant.grant_id,
                grant.subject,
                grant.client_id,
                grant.expires_at,
                None,
                grant.model_dump_json(),
            ),
        )
    conn.close()
    assert user_version(db_path) == 1

    storage = SqliteStorage(config(db_path))
    await storage.open()
    try:
        assert user_version(db_path) == SCHEMA_VERSION
        assert await storage.get_client(client.client_id) == client
        assert await storage.list_grants(subject=grant.subject) == [grant]
        # The version-2 tombstone table works on the migrated file.
        assert await storage.revoke_grant("not-yet-created", NOW) is False
    finally:
        await storage.close()


async def test_an_empty_version_0_file_gets_the_whole_schema(db_path: Path) -> None:
    sqlite3.connect(db_path).close()
    assert user_version(db_path) == 0
    storage = SqliteStorage(config(db_path))
    await storage.open()
    await storage.put_client(make_client())
    await storage.close()
    assert user_version(db_path) == SCHEMA_VERSION


async def test_a_file_from_a_newer_version_is_refused_with_a_clear_message(
    db_path: Path,
) -> None:
    with sqlite3.connect(db_path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    storage = SqliteStorage(config(db_path))
    with pytest.raises(StorageError, match="newer mcp-oauthd") as caught:
        await storage.open()
    assert f"version {SCHEMA_VERSION + 1}" in str(caught.value)
    assert user_version(db_path) == SCHEMA_VERSION + 1  # untouched
    with pytest.raises(StorageError, match="not open"):
        await storage.ping()


async def test_opening_a_file_that_is_not_a_database_is_storage_unavailable(
    db_path: Path,
) -> None:
    db_path.write_bytes(b"this is not a sqlite database, just some text " * 100)
    storage = SqliteStorage(config(db_path))
    with pytest.raises(StorageUnavailable):
        await storage.open()

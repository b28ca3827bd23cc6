"""The SQLite backend's event-loop paths: reads that never see a stale state, group commit
on the loop writer, the fall-back to the executor when another process holds the lock,
and checkpoints kept off the loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import mcp_oauthd.storage.sqlite as sqlite_module
from mcp_oauthd.storage import ConsumeStatus, GrantRevoked, RotateStatus, StorageError
from mcp_oauthd.storage.sqlite import SqliteStorage
from mcp_oauthd.testing.storage_conformance import (
    NOW,
    create_full_grant,
    make_access,
    make_client,
    make_code,
    make_grant,
    make_refresh,
    rotate,
)
from tests.storage.sqlite_support import REPO_ROOT, config, race_processes


@pytest.fixture
def storage(sqlite_storage: SqliteStorage) -> SqliteStorage:
    return sqlite_storage


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every transaction the loop writer attempts."""
    sizes: list[int] = []
    original = SqliteStorage._commit_batch

    def spy(writer: sqlite3.Connection, batch: Any) -> Any:
        sizes.append(len(batch))
        return original(writer, batch)

    monkeypatch.setattr(SqliteStorage, "_commit_batch", staticmethod(spy))
    return sizes


def spy_on(
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    calls: list[str],
    event: threading.Event | None = None,
) -> None:
    """Record the thread each call of ``SqliteStorage.<name>`` runs on."""
    original: Callable[..., Any] = getattr(SqliteStorage, name)

    def spy(self: SqliteStorage, *args: Any) -> Any:
        calls.append(threading.current_thread().name)
        if event is not None:
            event.set()
        return original(self, *args)

    monkeypatch.setattr(SqliteStorage, name, spy)


async def checkpoints_settled(storage: SqliteStorage) -> None:
    while storage._checkpointing is not None:
        await storage._checkpointing
        await asyncio.sleep(0)  # let its done callback run


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None, timeout=5)


# --------------------------------------------------------------------------- fresh reads
async def test_reads_see_a_revocation_by_another_instance_at_once(db_path: Path) -> None:
    a, b = SqliteStorage(config(db_path)), SqliteStorage(config(db_path))
    await a.open()
    await b.open()
    try:
        grant, access, refresh = await create_full_grant(a)
        for _ in range(3):  # warm every cache there is
            assert await a.get_access_token(access.token_hash) == access
            assert await a.get_access_token_by_jti(access.jti) == access
            assert await a.get_grant(grant.grant_id) == grant
        assert await b.revoke_grant(grant.grant_id, NOW + 5) is True
        assert await a.get_access_token(access.token_hash) is None
        assert await a.get_access_token_by_jti(access.jti) is None
        assert await a.get_refresh_token(refresh.token_hash) is None
        found = await a.get_grant(grant.grant_id)
        assert found is not None and found.revoked_at == NOW + 5
    finally:
        await a.close()
        await b.close()


REVOKER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from mcp_oauthd.config.models import SqliteStorageConfig
    from mcp_oauthd.storage.sqlite import SqliteStorage

    async def main() -> None:
        storage = SqliteStorage(SqliteStorageConfig(path=Path(sys.argv[1])))
        await storage.open()
        print("ready", flush=True)
        for line in sys.stdin:
            kind, key = line.split()
            if kind == "token":
                print(await storage.delete_access_token(key), flush=True)
            else:
                print(await storage.revoke_grant(key, 1), flush=True)
        await storage.close()

    asyncio.run(main())
    """
)


async def test_reads_see_a_revocation_by_another_process_as_soon_as_it_returns(
    storage: SqliteStorage, db_path: Path
) -> None:
    grant, access, _ = await create_full_grant(storage)
    other = make_access(grant)
    second_grant, second_access, _ = await create_full_grant(storage)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), *sys.path])}
    worker = subprocess.Popen(
        [sys.executable, "-c", REVOKER, str(db_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert worker.stdin is not None and worker.stdout is not None
    try:
        assert worker.stdout.readline().strip() == "ready"
        assert await storage.get_access_token(access.token_hash) == access
        worker.stdin.write(f"token {access.token_hash}\n")
        worker.stdin.flush()
        assert worker.stdout.readline().strip() == "True"
        assert await storage.get_access_token(access.token_hash) is None
        assert await storage.get_access_token(other.token_hash) is None  # never stored

        assert await storage.get_access_token(second_access.token_hash) == second_access
        worker.stdin.write(f"grant {second_grant.grant_id}\n")
        worker.stdin.flush()
        assert worker.stdout.readline().strip() == "True"
        assert await storage.get_access_token(second_access.token_hash) is None
        worker.stdin.close()
        assert worker.wait(timeout=60) == 0, worker.stderr.read() if worker.stderr else ""
    finally:
        if worker.poll() is None:
            worker.kill()


async def test_no_read_keeps_a_snapshot_open(storage: SqliteStorage, db_path: Path) -> None:
    client = make_client(registered_ip="192.0.2.1")
    await storage.put_client(client)
    grant, access, refresh = await create_full_grant(storage)
    await storage.put_ephemeral("login", "k", {"v": 1}, NOW + 60)
    # One of every read the loop does, hits and misses.
    assert await storage.get_client(client.client_id) == client
    assert await storage.get_client("nobody") is None
    assert await storage.count_clients_by_ip("192.0.2.1", NOW) == 1
    assert await storage.get_grant(grant.grant_id) == grant
    assert await storage.get_access_token(access.token_hash) == access
    assert await storage.get_access_token_by_jti(access.jti) == access
    assert await storage.get_refresh_token(refresh.token_hash) == refresh
    assert await storage.get_ephemeral("login", "k", NOW) == {"v": 1}
    assert await storage.get_consent("alice", "client-1", "x") is None
    # A TRUNCATE checkpoint with no busy timeout fails if any connection still reads.
    conn = raw(db_path)
    try:
        conn.execute("PRAGMA busy_timeout = 0")
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0
        conn.execute("DELETE FROM access_tokens WHERE token_hash = ?", (access.token_hash,))
    finally:
        conn.close()
    assert await storage.get_access_token(access.token_hash) is None


# --------------------------------------------------------------------------- group commit
async def test_writes_of_one_loop_turn_share_one_transaction(
    storage: SqliteStorage, batches: list[int]
) -> None:
    codes = [make_code() for _ in range(3)]
    for code in codes:
        await storage.put_code(code)
    batches.clear()
    grants = [make_grant() for _ in range(5)]
    results = await asyncio.gather(
        *(storage.consume_code(c.code_hash, NOW) for c in codes),
        *(storage.create_grant(g, make_access(g), make_refresh(g)) for g in grants),
    )
    assert batches == [8]
    assert [getattr(r, "status", None) for r in results[:3]] == [ConsumeStatus.OK] * 3
    for grant in grants:
        assert await storage.get_grant(grant.grant_id) == grant


async def test_an_operation_failing_in_a_shared_transaction_is_rolled_back_alone(
    storage: SqliteStorage, batches: list[int]
) -> None:
    grant, _, refresh = await create_full_grant(storage)
    tombstoned = make_grant()
    await storage.revoke_grant(tombstoned.grant_id, NOW)
    fine = make_grant()
    batches.clear()
    # The rotation updates the old refresh token, then fails on the access token's foreign
    # key: its savepoint must undo the update too, and nothing else.
    orphan = make_access(make_grant())
    outcomes = await asyncio.gather(
        storage.create_grant(tombstoned, make_access(tombstoned), None),
        storage.rotate_refresh_token(
            refresh.token_hash, orphan, make_refresh(grant), "s", NOW + 1, 30
        ),
        storage.create_grant(fine, make_access(fine), None),
        storage.create_grant(fine, make_access(fine), None),  # sees the one before it
        return_exceptions=True,
    )
    assert batches == [4]
    assert isinstance(outcomes[0], GrantRevoked)
    assert isinstance(outcomes[1], StorageError)
    assert outcomes[2] is None
    assert isinstance(outcomes[3], StorageError) and "already exists" in str(outcomes[3])
    assert await storage.get_refresh_token(refresh.token_hash) == refresh  # not rotated
    assert await storage.get_access_token(orphan.token_hash) is None
    assert await storage.get_grant(fine.grant_id) == fine
    assert await storage.get_grant(tombstoned.grant_id) is None
    result, _, _ = await rotate(storage, refresh, grant, now=NOW + 2, grace=30)
    assert result.status is RotateStatus.ROTATED


async def test_a_transaction_that_does_not_commit_is_run_again_on_the_executor(
    storage: SqliteStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SqliteStorage, "_commit_batch", staticmethod(lambda writer, batch: None))
    on_executor: list[str] = []
    spy_on(monkeypatch, "_write_tx", on_executor)
    grant, _, refresh = await create_full_grant(storage)
    outcomes = await asyncio.gather(
        rotate(storage, refresh, grant, now=NOW + 1, grace=30),
        rotate(storage, refresh, grant, now=NOW + 1, grace=30),
    )
    assert sorted(o[0].status for o in outcomes) == [RotateStatus.GRACE, RotateStatus.ROTATED]
    assert len(on_executor) == 3
    assert all(name.startswith("mcp-oauthd-sqlite_") for name in on_executor)


async def test_a_cancelled_write_is_not_run(storage: SqliteStorage) -> None:
    code = make_code()
    task = asyncio.ensure_future(storage.put_code(code))
    await asyncio.sleep(0)  # the write is queued for the next commit
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await storage.consume_code(code.code_hash, NOW)).status is ConsumeStatus.MISSING


async def test_close_commits_the_writes_already_handed_over(db_path: Path) -> None:
    storage = SqliteStorage(config(db_path))
    await storage.open()
    code = make_code()
    task = asyncio.ensure_future(storage.put_code(code))
    await asyncio.sleep(0)
    await storage.close()
    await task
    again = SqliteStorage(config(db_path))
    await again.open()
    try:
        assert (await again.consume_code(code.code_hash, NOW)).status is ConsumeStatus.OK
    finally:
        await again.close()


# --------------------------------------------------------------------------- busy file
async def test_writes_go_to_the_executor_while_another_connection_holds_the_lock(
    storage: SqliteStorage, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    grant, _, refresh = await create_full_grant(storage)
    code = make_code()
    await storage.put_code(code)
    handed_over = threading.Event()
    on_executor: list[str] = []
    spy_on(monkeypatch, "_write_tx", on_executor, handed_over)
    blocker = raw(db_path)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        rotation = asyncio.ensure_future(rotate(storage, refresh, grant, now=NOW + 1, grace=30))
        consumed = asyncio.ensure_future(storage.consume_code(code.code_hash, NOW))
        loop = asyncio.get_running_loop()
        # The executor thread now waits for the lock (busy_timeout); the loop does not.
        assert await loop.run_in_executor(None, handed_over.wait, 30)
        assert await storage.get_grant(grant.grant_id) == grant  # reads still answer
        blocker.execute("ROLLBACK")
        result, _, _ = await rotation
        assert result.status is RotateStatus.ROTATED
        assert (await consumed).status is ConsumeStatus.OK
    finally:
        blocker.close()
    assert len(on_executor) == 2
    # Once the lock is free the loop writes again.
    on_executor.clear()
    await storage.put_code(make_code())
    assert on_executor == []


# --------------------------------------------------------------------------- settings, WAL
async def test_the_loop_writer_keeps_durability_and_never_checkpoints(
    storage: SqliteStorage,
) -> None:
    writer = storage._writer
    assert writer is not None
    assert writer.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL, as before
    assert writer.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert writer.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    assert writer.execute("PRAGMA busy_timeout").fetchone()[0] == 0
    conn = storage._conn
    assert conn is not None
    assert await storage._run(lambda: conn.execute("PRAGMA synchronous").fetchone()[0]) == 1


async def test_checkpoints_run_on_their_own_thread_every_n_loop_writes(
    storage: SqliteStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "CHECKPOINT_EVERY", 5)
    threads: list[str] = []
    spy_on(monkeypatch, "_checkpoint_sync", threads)
    for _ in range(4):
        await storage.put_code(make_code())
    await checkpoints_settled(storage)
    assert threads == []
    for _ in range(6):
        await storage.put_code(make_code())
        await checkpoints_settled(storage)
    assert len(threads) == 2
    assert all(name.startswith("mcp-oauthd-sqlite-checkpoint") for name in threads)


def wal_frames(path: Path) -> int:
    """Frames in the WAL (a passive checkpoint from a connection of its own reports it)."""
    conn = raw(path)
    try:
        return int(conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])
    finally:
        conn.close()


async def test_a_long_wal_is_started_over(
    storage: SqliteStorage, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "CHECKPOINT_EVERY", 10**9)
    for _ in range(30):
        await storage.put_code(make_code())
    long_wal = wal_frames(db_path)
    assert long_wal >= 30

    monkeypatch.setattr(sqlite_module, "CHECKPOINT_EVERY", 1)
    monkeypatch.setattr(sqlite_module, "WAL_RESTART_FRAMES", 1)
    restarts: list[str] = []
    spy_on(monkeypatch, "_restart_wal_sync", restarts)
    await storage.put_code(make_code())
    await checkpoints_settled(storage)
    assert restarts and restarts[0].startswith("mcp-oauthd-sqlite-checkpoint")
    assert storage._writes_paused is False

    monkeypatch.setattr(sqlite_module, "CHECKPOINT_EVERY", 10**9)
    await storage.put_code(make_code())
    assert wal_frames(db_path) < long_wal  # the WAL started over


async def test_loop_writes_wait_while_the_wal_is_restarted_then_commit(
    storage: SqliteStorage, monkeypatch: pytest.MonkeyPatch, batches: list[int]
) -> None:
    monkeypatch.setattr(sqlite_module, "CHECKPOINT_EVERY", 1)
    monkeypatch.setattr(sqlite_module, "WAL_RESTART_FRAMES", 1)
    release = threading.Event()
    original = SqliteStorage._restart_wal_sync

    def held_restart(self: SqliteStorage) -> None:
        release.wait(30)
        original(self)

    monkeypatch.setattr(SqliteStorage, "_restart_wal_sync", held_restart)
    await storage.put_code(make_code())  # starts a passive checkpoint
    passive = storage._checkpointing
    assert passive is not None
    await passive  # its done callback, run before this task resumes, starts the restart
    assert storage._writes_paused is True
    codes = [make_code() for _ in range(3)]
    tasks = [asyncio.ensure_future(storage.put_code(c)) for c in codes]
    for _ in range(5):
        await asyncio.sleep(0)
    assert not any(task.done() for task in tasks)
    assert await storage.get_access_token("x") is None  # reads go on meanwhile
    batches.clear()
    release.set()
    await asyncio.gather(*tasks)
    assert batches == [3]  # on the loop, together
    assert storage._writes_paused is False
    for code in codes:
        assert (await storage.consume_code(code.code_hash, NOW)).status is ConsumeStatus.OK
    await checkpoints_settled(storage)


# --------------------------------------------------------------------------- processes
ROTATOR = textwrap.dedent(
    """
    import asyncio, json, sys
    from pathlib import Path
    from mcp_oauthd.config.models import SqliteStorageConfig
    from mcp_oauthd.storage.base import AccessTokenRecord, RefreshTokenRecord
    from mcp_oauthd.storage.sqlite import SqliteStorage

    async def main() -> None:
        path, jobs = Path(sys.argv[1]), json.loads(sys.argv[2])
        storage = SqliteStorage(SqliteStorageConfig(path=path, busy_timeout=30))
        await storage.open()
        print("ready", flush=True)
        sys.stdin.readline()  # the barrier: every worker starts together
        results = await asyncio.gather(*(
            storage.rotate_refresh_token(
                job["old"],
                AccessTokenRecord.model_validate(job["access"]),
                RefreshTokenRecord.model_validate(job["refresh"]),
                job["successor"], job["now"], 30.0,
            )
            for job in jobs
        ))
        await storage.close()
        print(json.dumps([r.status.value for r in results]), flush=True)

    asyncio.run(main())
    """
)


async def test_processes_rotating_the_same_tokens_concurrently_rotate_each_once(
    db_path: Path,
) -> None:
    storage = SqliteStorage(config(db_path))
    await storage.open()
    families = [await create_full_grant(storage) for _ in range(40)]
    await storage.close()

    argvs = []
    for n in range(4):
        jobs = []
        for grant, _, refresh in families:
            access, new_refresh = make_access(grant), make_refresh(grant)
            jobs.append(
                {
                    "old": refresh.token_hash,
                    "access": access.model_dump(),
                    "refresh": new_refresh.model_dump(),
                    "successor": f"successor-{n}",
                    "now": NOW + 1,
                }
            )
        argvs.append([str(db_path), json.dumps(jobs)])
    per_worker = race_processes(ROTATOR, argvs)
    for i in range(len(families)):
        statuses = sorted(results[i] for results in per_worker)
        assert statuses == ["grace", "grace", "grace", "rotated"], statuses


# --------------------------------------------------------------------------- batched gc
@pytest.fixture
def gc_batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """gc in batches of 3 rows of a kind; the rows each gc transaction removed."""
    monkeypatch.setattr(sqlite_module, "GC_BATCH", 3)
    removed: list[int] = []
    original = SqliteStorage._gc_batch_sync

    def counting(self: SqliteStorage, now: float, limit: int) -> tuple[int, bool]:
        count, done = original(self, now, limit)
        removed.append(count)
        return count, done

    monkeypatch.setattr(SqliteStorage, "_gc_batch_sync", counting)
    return removed


async def test_gc_removes_a_backlog_in_small_transactions_and_keeps_what_lives(
    storage: SqliteStorage, gc_batches: list[int]
) -> None:
    dead = [await create_full_grant(storage, make_grant(ttl=60)) for _ in range(7)]
    live_grant, live_access, live_refresh = await create_full_grant(storage)
    for index in range(5):
        await storage.put_ephemeral("flow", f"k{index}", {"i": index}, NOW + 10)
    # Each dead grant: the grant and its two tokens; plus the five flow entries.
    assert await storage.gc(NOW + 61) == 7 * 3 + 5
    # Three grants (each with its two tokens) a batch; then the last grant and three of
    # the flow entries; then the rest.
    assert gc_batches == [9, 9, 3 + 3, 2]
    for grant, access, refresh in dead:
        assert await storage.get_grant(grant.grant_id) is None
        assert await storage.get_access_token(access.token_hash) is None
        assert await storage.get_refresh_token(refresh.token_hash) is None
    assert await storage.get_grant(live_grant.grant_id) == live_grant
    assert await storage.get_access_token(live_access.token_hash) == live_access
    assert await storage.get_refresh_token(live_refresh.token_hash) == live_refresh
    assert await storage.gc(NOW + 61) == 0


async def test_a_write_issued_during_a_gc_run_lands_between_its_batches(
    storage: SqliteStorage, gc_batches: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(9):
        await create_full_grant(storage, make_grant(ttl=60))
    loop = asyncio.get_running_loop()
    written: list[concurrent.futures.Future[None]] = []
    # Whether the write is in the file when each batch starts (read by the batch itself,
    # on the executor's connection: what the database holds, not what the loop has heard).
    visible: list[bool] = []
    counting = SqliteStorage._gc_batch_sync

    def batch(self: SqliteStorage, now: float, limit: int) -> tuple[int, bool]:
        row = self._connection().execute(
            "SELECT 1 FROM ephemeral WHERE kind = 'flow' AND key = 'during'"
        )
        visible.append(row.fetchone() is not None)
        result = counting(self, now, limit)
        if len(visible) == 1:  # a request writes while the first batch runs
            write = storage.put_ephemeral("flow", "during", {"v": 1}, NOW + 3600)
            written.append(asyncio.run_coroutine_threadsafe(write, loop))
        return result

    monkeypatch.setattr(SqliteStorage, "_gc_batch_sync", batch)
    assert await storage.gc(NOW + 61) == 27
    await asyncio.wrap_future(written[0])
    assert gc_batches == [9, 9, 9, 0]  # three grants (and their tokens) a batch
    # Issued during batch 1, the write is committed by the start of batch 3 whichever
    # way it went (on the loop between batches, or queued on the executor after batch 2):
    # it did not wait for the whole run.
    assert visible[0] is False
    assert visible[2:] == [True, True]
    assert await storage.get_ephemeral("flow", "during", NOW) == {"v": 1}

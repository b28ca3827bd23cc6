"""The SQLite storage backend: the default. One file, survives restarts, safe for several
worker processes on one host.

The stdlib ``sqlite3`` module is blocking. Each domain operation is one transaction (or
a savepoint in one, see below); writers start with ``BEGIN IMMEDIATE`` so they take the
file's write lock up front and the read-check-write inside them is atomic across threads
*and* processes. The database runs in WAL mode so readers never block the writer, with
``synchronous = NORMAL`` on every connection. The connections:

- a read-only one used on the event loop for key lookups (a WAL read never waits);
- a writer used on the event loop for the short, bounded writes (code exchange, refresh,
  revocation, flow state...). The writes issued during one turn of the loop are committed
  together in one transaction (group commit, ``_flush_writes``), taken and released within
  one synchronous call, never across an ``await``, with no busy timeout: when another
  process (or our own executor) holds the write lock, SQLite answers SQLITE_BUSY at once,
  the transaction is rolled back and each of its writes is handed to
- the executor connection on a dedicated single-thread executor, which waits up to
  ``busy_timeout`` and also runs everything unbounded (listing, ``gc``, client deletion);
- a checkpoint connection on a thread of its own: the loop writer never checkpoints
  itself (the fsyncs would stall the loop), see ``_note_loop_writes``.

Schema changes are ordered migrations recorded in ``PRAGMA user_version``; ``open()``
applies the missing ones in one transaction and refuses a file written by a newer version.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar, cast

import orjson

from mcp_oauthd.config.models import SqliteStorageConfig
from mcp_oauthd.plugins import StoragePlugin

from .base import (
    AccessTokenRecord,
    ClientKind,
    ClientRecord,
    CodeRecord,
    ConsentRecord,
    ConsumeResult,
    ConsumeStatus,
    GrantRecord,
    GrantRevoked,
    Record,
    RefreshTokenRecord,
    RotateResult,
    RotateStatus,
    SigningKeyRecord,
    StorageError,
    StorageUnavailable,
    trusted_record,
)

T = TypeVar("T")

#: How long a tombstone for a never-created grant id is kept (see ``revoke_grant``).
DEFAULT_TOMBSTONE_TTL = 86_400.0

#: Ordered migrations. Entry ``i`` upgrades a file from version ``i`` to ``i + 1``.
#: Never edit a released entry: append a new one. Statements run one by one inside the
#: single migration transaction (``executescript`` would commit on its own).
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # v1: the record tables.
    (
        """CREATE TABLE clients (
            client_id TEXT PRIMARY KEY,
            expires_at REAL,
            data TEXT NOT NULL
        )""",
        """CREATE TABLE codes (
            code_hash TEXT PRIMARY KEY,
            grant_id TEXT NOT NULL,
            expires_at REAL NOT NULL,
            data TEXT NOT NULL
        )""",
        """CREATE TABLE grants (
            grant_id TEXT PRIMARY KEY,
            subject TEXT NOT NULL,
            client_id TEXT NOT NULL,
            expires_at REAL NOT NULL,
            revoked_at REAL,
            data TEXT NOT NULL
        )""",
        """CREATE TABLE access_tokens (
            token_hash TEXT PRIMARY KEY,
            jti TEXT NOT NULL,
            grant_id TEXT NOT NULL REFERENCES grants(grant_id),
            expires_at REAL NOT NULL,
            data TEXT NOT NULL
        )""",
        """CREATE TABLE refresh_tokens (
            token_hash TEXT PRIMARY KEY,
            grant_id TEXT NOT NULL REFERENCES grants(grant_id),
            expires_at REAL NOT NULL,
            data TEXT NOT NULL
        )""",
        """CREATE TABLE consents (
            subject TEXT NOT NULL,
            client_id TEXT NOT NULL,
            resource TEXT NOT NULL,
            expires_at REAL NOT NULL,
            data TEXT NOT NULL,
            PRIMARY KEY (subject, client_id, resource)
        )""",
        """CREATE TABLE ephemeral (
            kind TEXT NOT NULL,
            key TEXT NOT NULL,
            expires_at REAL NOT NULL,
            data TEXT NOT NULL,
            PRIMARY KEY (kind, key)
        )""",
        "CREATE INDEX codes_expires_at ON codes(expires_at)",
        "CREATE INDEX grants_expires_at ON grants(expires_at)",
        "CREATE INDEX access_tokens_grant_id ON access_tokens(grant_id)",
        "CREATE INDEX access_tokens_jti ON access_tokens(jti)",
        "CREATE INDEX access_tokens_expires_at ON access_tokens(expires_at)",
        "CREATE INDEX refresh_tokens_grant_id ON refresh_tokens(grant_id)",
        "CREATE INDEX refresh_tokens_expires_at ON refresh_tokens(expires_at)",
        "CREATE INDEX consents_expires_at ON consents(expires_at)",
        "CREATE INDEX ephemeral_expires_at ON ephemeral(expires_at)",
    ),
    # v2: tombstones for grant ids revoked before creation, and the list_grants indexes.
    (
        """CREATE TABLE grant_tombstones (
            grant_id TEXT PRIMARY KEY,
            revoked_at REAL NOT NULL,
            expires_at REAL NOT NULL
        )""",
        "CREATE INDEX grant_tombstones_expires_at ON grant_tombstones(expires_at)",
        "CREATE INDEX grants_subject ON grants(subject)",
        "CREATE INDEX grants_client_id ON grants(client_id)",
        "CREATE INDEX clients_expires_at ON clients(expires_at)",
    ),
    # v3: JWT signing keys (kid and generation each unique: one winner per rotation).
    (
        """CREATE TABLE signing_keys (
            kid TEXT PRIMARY KEY,
            generation INTEGER NOT NULL UNIQUE,
            data TEXT NOT NULL
        )""",
    ),
    # v4: the per-IP registration cap counts live clients by where they registered from.
    (
        "ALTER TABLE clients ADD COLUMN registered_ip TEXT",
        "UPDATE clients SET registered_ip = json_extract(data, '$.registered_ip')",
        "CREATE INDEX clients_registered_ip ON clients(registered_ip, expires_at)",
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)

_UNAVAILABLE_MARKERS = (
    "locked",
    "busy",
    "disk",
    "i/o",
    "unable to open",
    "readonly",
    "read-only",
    "full",
    "malformed",
    "not a database",
)


def _translate(exc: sqlite3.Error) -> StorageError:
    """A storage error for a sqlite3 one; the message never carries SQL or values."""
    code = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
    text = str(exc).lower()
    if isinstance(exc, sqlite3.OperationalError | sqlite3.DatabaseError) and any(
        marker in text for marker in _UNAVAILABLE_MARKERS
    ):
        if "locked" in text or "busy" in text:
            return StorageUnavailable(
                f"sqlite storage is busy: the database stayed locked longer than "
                f"busy_timeout ({code})"
            )
        return StorageUnavailable(f"sqlite storage cannot use the database file ({code})")
    return StorageError(f"sqlite storage failed ({code})")


def _expired(expires_at: float | None, now: float) -> bool:
    return expires_at is not None and expires_at <= now


#: Primary result codes that mean "another connection holds the lock right now".
_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


def _is_busy(exc: sqlite3.Error) -> bool:
    return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in _BUSY_CODES


#: How the WAL switch waits between attempts (a name of its own so tests can replace it).
_pause = time.sleep


#: What a pending write's future holds when it must run on the executor instead.
_FALL_BACK: Any = object()

#: A write waiting for the next group commit: body, its arguments, the caller's future.
_PendingWrite = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]"]

#: At most this many operations share one transaction, so the write lock is never held
#: for long (another process waits meanwhile) nor the loop kept busy by one commit.
_MAX_BATCH = 64

#: After this many writes by the event-loop writer (whose WAL autocheckpoint is off) a
#: checkpoint runs on a thread of its own, so its fsyncs never stall the event loop. A hot-path
#: write adds at most about ten pages to the WAL, which keeps checkpoints near SQLite's
#: own default (one per 1000 WAL pages).
CHECKPOINT_EVERY = 100

#: Once the WAL holds this many frames (16 MiB of 4 KiB pages) a checkpoint also makes
#: the next writer start it over (see ``_restart_wal_sync``), bounding the file's size.
WAL_RESTART_FRAMES = 4096

#: Database pages the event-loop connections read through a memory map rather than a
#: read() into their page cache. A commit by any other connection empties a connection's
#: page cache, so on a busy server each lookup re-reads its b-tree path; mapped, that
#: costs no system call. Address space only: nothing is loaded until touched. The map is read-only
#: (SQLite writes through write()), so a stray pointer cannot corrupt the file.
_MMAP_SIZE = 256 * 1024 * 1024

# ----------------------------------------------------------------------------- rows
# A row's ``data`` is the JSON of a record this backend was given, which pydantic validated
# when the caller built it. Validating it again on every read (``model_validate_json``)
# cost more than finding the row, so the reads parse it with orjson and build the record
# the way pydantic's ``model_construct`` does, without validation. That is exact only for a
# row in the current shape, so this fast path is taken only when the row holds exactly the
# record's fields in declaration order (a row written by an older version that lacks a
# field, or holds one since removed, does not) and every float field holds a float (JSON
# ``1`` parses to an int where validation gives ``1.0``); any other text, malformed
# included, is validated by pydantic exactly as before.
#
# Every read reads its row (a revoked or deleted token is gone at once, also when another
# process wrote) and, but for clients, decodes it anew: a new record with new lists, so no
# caller shares mutable state with another or with the store. Access tokens used to be
# memoised by row text (4096 of them); with more tokens live than that (the benchmark
# cycles 10,000) it missed on every read and cost more than it saved (measured: 13k
# instructions per introspection more than decoding without it: hashing the text, and
# records that outlive their request, which the cyclic GC then traverses and promotes).
# Grants and refresh tokens are read about once per refresh (which changes the row).
# Clients are few and read on every token request of a dynamic client: their decoding
# stays memoised, keyed by the exact row text (a changed row is never answered from the
# memo), the record shared by the callers that read that text (records are frozen).
#
# Writes encode with orjson too: these records hold only str, None, float and list[str]
# values, which it writes as pydantic does (floats in their shortest exact form, non-finite
# ones as null) for a fifth of the cost. (An int in a float field, which only an unvalidated
# ``model_copy`` update can put there, is written as an int: the read then takes the
# validating path and gets the float pydantic would have written.) Clients, whose
# ``metadata`` is free-form, keep pydantic's encoding.

_loads = orjson.loads
_dumps = orjson.dumps
#: The types an optional float field may hold in a row taken by the fast path.
_FLOAT_OR_NONE = frozenset({float, type(None)})


def _row_keys(cls: type[Record]) -> tuple[str, ...]:
    """The field names of ``cls`` in declaration order, the order a row holds them in.

    They are taken from orjson itself, which hands out the same cached string object for a
    given short key every time it parses one: comparing a parsed row's keys with these is
    then mostly pointer comparisons. Only a matter of speed: equal strings compare equal.
    """
    return tuple(_loads(_dumps(dict.fromkeys(cls.model_fields))))


_ACCESS_KEYS = _row_keys(AccessTokenRecord)
_REFRESH_KEYS = _row_keys(RefreshTokenRecord)
_GRANT_KEYS = _row_keys(GrantRecord)
_CLIENT_KEYS = _row_keys(ClientRecord)
_ACCESS_FIELDS = frozenset(_ACCESS_KEYS)
_REFRESH_FIELDS = frozenset(_REFRESH_KEYS)
_GRANT_FIELDS = frozenset(_GRANT_KEYS)
_CLIENT_FIELDS = frozenset(_CLIENT_KEYS)
_CLIENT_KINDS: dict[str, ClientKind] = {kind.value: kind for kind in ClientKind}


def _parse(text: str, fields: tuple[str, ...]) -> dict[str, Any] | None:
    """The values of a row holding exactly these ``fields`` in that order; None for any other."""
    try:
        values = _loads(text)
    except orjson.JSONDecodeError:
        return None
    if type(values) is dict and tuple(values) == fields:
        return values
    return None


def _decode_access(text: str) -> AccessTokenRecord:
    """An access token's row: the introspection hot path (``_parse`` inlined)."""
    try:
        values = _loads(text)
    except orjson.JSONDecodeError:
        values = None
    if (
        type(values) is dict
        and tuple(values) == _ACCESS_KEYS
        and type(values["issued_at"]) is float
        and type(values["expires_at"]) is float
    ):
        return trusted_record(AccessTokenRecord, _ACCESS_FIELDS, values)
    return AccessTokenRecord.model_validate_json(text)


def _decode_refresh(text: str) -> RefreshTokenRecord:
    values = _parse(text, _REFRESH_KEYS)
    if (
        values is not None
        and type(values["issued_at"]) is float
        and type(values["expires_at"]) is float
        and type(values["rotated_at"]) in _FLOAT_OR_NONE
    ):
        return trusted_record(RefreshTokenRecord, _REFRESH_FIELDS, values)
    return RefreshTokenRecord.model_validate_json(text)


def _decode_grant(text: str) -> GrantRecord:
    values = _parse(text, _GRANT_KEYS)
    if (
        values is not None
        and type(values["created_at"]) is float
        and type(values["expires_at"]) is float
        and type(values["upstream_expires_at"]) in _FLOAT_OR_NONE
        and type(values["revoked_at"]) in _FLOAT_OR_NONE
    ):
        return trusted_record(GrantRecord, _GRANT_FIELDS, values)
    return GrantRecord.model_validate_json(text)


def _decode_client(text: str) -> ClientRecord:
    values = _parse(text, _CLIENT_KEYS)
    if (
        values is not None
        and type(values["created_at"]) is float
        and type(values["expires_at"]) in _FLOAT_OR_NONE
        and type(kind := values["kind"]) is str
        and kind in _CLIENT_KINDS
    ):
        values["kind"] = _CLIENT_KINDS[kind]  # validation makes the enum member
        return trusted_record(ClientRecord, _CLIENT_FIELDS, values)
    return ClientRecord.model_validate_json(text)


#: Decoded clients by exact row text (see above): 1024 at most, a few KB each (~4 MB).
_decode_client_memo = functools.lru_cache(maxsize=1024)(_decode_client)


def _dump(record: Record, update: dict[str, Any] | None = None) -> str:
    """The row text of ``record`` (with ``update`` applied, as ``model_copy`` would), for
    the records whose values are all str, None, float or list[str] (see above). A value
    orjson refuses is left to pydantic, which decides as it always did."""
    values = record.__dict__ if update is None else {**record.__dict__, **update}
    try:
        return _dumps(values).decode()
    except orjson.JSONEncodeError:
        changed = record if update is None else record.model_copy(update=update)
        return changed.model_dump_json()


class SqliteStorage:
    """A ``Storage`` in one SQLite file."""

    name = "sqlite"

    def __init__(
        self, config: SqliteStorageConfig, *, tombstone_ttl: float = DEFAULT_TOMBSTONE_TTL
    ) -> None:
        self._path = Path(config.path).expanduser()
        self._busy_timeout = float(config.busy_timeout)
        self._tombstone_ttl = tombstone_ttl
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        # A read-only connection used on the event loop itself for the key lookups (an
        # access token, a client, a grant...): a WAL read never waits for writers and takes
        # microseconds, less than the round trip to the executor thread would. One cursor
        # is kept (each query on it returns at most one row, so its statement is always
        # run to completion and reset: no read transaction, hence no stale snapshot,
        # outlives the call).
        self._reader: sqlite3.Connection | None = None
        self._reader_cursor: sqlite3.Cursor | None = None
        # The event-loop writer (see the module docstring), the writes waiting for its
        # next group commit, and the checkpoint bookkeeping.
        self._writer: sqlite3.Connection | None = None
        self._pending: list[_PendingWrite] = []
        self._flush_scheduled = False
        self._loop_writes = 0
        self._checkpointing: asyncio.Future[Any] | None = None
        self._writes_paused = False
        # Checkpoints get a thread and a connection of their own, so one never waits
        # behind a slow executor call (gc, a write waiting for another process's lock)
        # while the loop's writes are paused for it.
        self._checkpointer: ThreadPoolExecutor | None = None
        self._checkpoint_conn: sqlite3.Connection | None = None

    # ----------------------------------------------------------------- plumbing
    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None or self._conn is None:
            raise StorageError("sqlite storage is not open; call open() first")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    async def _write_now(self, body: Callable[..., T], *args: Any) -> T:
        """Run ``body(conn, *args)`` atomically as (part of) one write transaction on the
        event loop; when the write lock is taken elsewhere, on the executor instead.

        Writes issued during one turn of the event loop are committed together (group
        commit, see ``_flush_writes``): a commit's cost is mostly the WAL pages it writes,
        which concurrent operations share. ``body`` must be short, bounded and synchronous.
        """
        if self._writer is None:
            raise StorageError("sqlite storage is not open; call open() first")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((body, args, future))
        self._schedule_flush(loop)
        outcome = await future
        if outcome is _FALL_BACK:
            return await self._run(self._write_tx, body, *args)
        return cast(T, outcome)

    def _schedule_flush(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        if self._flush_scheduled or not self._pending:
            return
        self._flush_scheduled = True
        (loop or asyncio.get_running_loop()).call_soon(self._flush_writes)

    def _flush_writes(self) -> None:
        """Commit the pending writes, ``_MAX_BATCH`` per transaction, on the event loop.

        Each operation runs inside a savepoint of the shared transaction, so one that
        raises is rolled back alone; it sees the effects of those before it, exactly as if
        they had run one after another. No outcome, success or error, is delivered before
        the COMMIT: when anything fails at the level of the transaction (the write lock is
        taken, SQLite rolled the transaction back, COMMIT failed) nothing of the batch
        happened, and every operation in it is run again on its own on the executor.

        While our own checkpoint restarts the WAL (``_restart_wal_sync``) the loop starts
        no transaction: the writes wait here and are flushed when it is done.
        """
        self._flush_scheduled = False
        if self._writes_paused:
            return
        pending = [op for op in self._pending if not op[2].done()]  # drop cancelled callers
        self._pending = []
        writer = self._writer
        while pending:
            batch, pending = pending[:_MAX_BATCH], pending[_MAX_BATCH:]
            outcomes = None if writer is None else self._commit_batch(writer, batch)
            if outcomes is None:
                for _, _, future in batch + pending:
                    if not future.done():
                        future.set_result(_FALL_BACK)
                return
            for (_, _, future), (ok, value) in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
            self._note_loop_writes(len(batch))

    @staticmethod
    def _commit_batch(
        writer: sqlite3.Connection, batch: Sequence[_PendingWrite]
    ) -> list[tuple[bool, Any]] | None:
        """Run ``batch`` in one write transaction; the outcome of each operation, or None
        when the transaction as a whole did not commit (see ``_flush_writes``)."""
        try:
            if writer.in_transaction:  # only if an earlier ROLLBACK failed: start clean
                writer.execute("ROLLBACK")
            writer.execute("BEGIN IMMEDIATE")
        except sqlite3.Error:
            return None  # busy (no waiting on the loop), or worse: the executor decides
        single = len(batch) == 1
        outcomes: list[tuple[bool, Any]] = []
        try:
            for body, args, _ in batch:
                if not single:
                    writer.execute("SAVEPOINT op")
                try:
                    value = body(writer, *args)
                except Exception as exc:
                    if isinstance(exc, sqlite3.Error) and (
                        _is_busy(exc) or not writer.in_transaction
                    ):
                        raise  # the transaction is lost, not just this operation
                    error = _translate(exc) if isinstance(exc, sqlite3.Error) else exc
                    if single:  # nothing else to commit
                        writer.execute("ROLLBACK")
                        return [(False, error)]
                    writer.execute("ROLLBACK TO op")
                    writer.execute("RELEASE op")
                    outcomes.append((False, error))
                else:
                    if not single:
                        writer.execute("RELEASE op")
                    outcomes.append((True, value))
            writer.execute("COMMIT")
        except BaseException as exc:
            # A failed COMMIT leaves the transaction open: roll it back in every case.
            if writer.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    writer.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                return None
            raise
        return outcomes

    def _write_tx(self, body: Callable[..., T], *args: Any) -> T:
        """The executor side of ``_write_now``."""
        with self._write() as conn:
            return body(conn, *args)

    def _note_loop_writes(self, count: int) -> None:
        """Count the writes committed by the event-loop writer; every ``CHECKPOINT_EVERY``
        of them hand a checkpoint to the executor (one at a time).

        The loop writer runs with ``wal_autocheckpoint = 0``: an automatic checkpoint runs
        inside the COMMIT that crosses the threshold and, with ``synchronous = NORMAL``,
        fsyncs the WAL and the database, milliseconds that would stall every request on the
        loop. (Commits on the executor connection keep SQLite's autocheckpoint: they are off
        the loop already.)
        """
        self._loop_writes += count
        if self._loop_writes >= CHECKPOINT_EVERY and self._checkpointing is None:
            self._loop_writes = 0
            self._start_checkpoint(self._checkpoint_sync, self._checkpointed)

    def _start_checkpoint(
        self, fn: Callable[[], Any], then: Callable[[asyncio.Future[Any]], None]
    ) -> None:
        if self._checkpointer is None:
            return
        future = asyncio.get_running_loop().run_in_executor(self._checkpointer, fn)
        self._checkpointing = future
        future.add_done_callback(then)

    def _checkpointed(self, future: asyncio.Future[int]) -> None:
        """After a passive checkpoint: restart the WAL once it has grown too long."""
        self._checkpointing = None
        frames = 0 if future.cancelled() or future.exception() else future.result()
        if frames >= WAL_RESTART_FRAMES and self._checkpointer is not None:
            self._writes_paused = True
            self._start_checkpoint(self._restart_wal_sync, self._wal_restarted)

    def _wal_restarted(self, future: asyncio.Future[None]) -> None:
        self._checkpointing = None
        self._writes_paused = False
        if not future.cancelled():
            future.exception()  # retrieved; _restart_wal_sync raises nothing on purpose
        self._schedule_flush()

    def _checkpoint_connection(self) -> sqlite3.Connection:
        """The checkpoint connection, opened on first use in the checkpoint thread."""
        conn = self._checkpoint_conn
        if conn is None:
            conn = sqlite3.connect(
                self._path, timeout=0, isolation_level=None, check_same_thread=False
            )
            try:
                # No busy timeout: a checkpoint that cannot have a lock gives up at once.
                conn.execute("PRAGMA busy_timeout = 0")
                # A checkpoint fsyncs the WAL before copying it and the database after,
                # as the executor connection's would (same durability).
                conn.execute("PRAGMA synchronous = NORMAL")
            except BaseException:
                conn.close()
                raise
            self._checkpoint_conn = conn
        return conn

    def _checkpoint_sync(self) -> int:
        """A PASSIVE checkpoint, which never blocks writers or readers (the loop keeps
        committing meanwhile); how many frames the WAL holds. Best effort: one that cannot
        run now leaves the WAL as it is and the next one catches up."""
        with contextlib.suppress(sqlite3.Error):
            conn = self._checkpoint_connection()
            row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            return 0 if row is None else int(row[1])
        return 0

    def _restart_wal_sync(self) -> None:
        """Have the next writer start the WAL file over (RESTART checkpoint).

        The WAL only starts over once a checkpoint has caught up with it, which a passive
        one never does while the loop keeps committing; so the loop pauses its writes for
        this call (``_writes_paused``), a few milliseconds: the last frames and two fsyncs.
        No busy timeout: if another process holds the lock or still reads old frames, give
        up at once (and unpause); a later round tries again.
        """
        with contextlib.suppress(sqlite3.Error):
            self._checkpoint_connection().execute("PRAGMA wal_checkpoint(RESTART)").fetchone()

    def _close_checkpoint_sync(self) -> None:
        conn, self._checkpoint_conn = self._checkpoint_conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StorageError("sqlite storage is closed")
        return self._conn

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read: every statement sees a committed snapshot; errors are translated."""
        try:
            yield self._connection()
        except sqlite3.Error as exc:
            raise _translate(exc) from None

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction holding the file's write lock from its first statement."""
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _translate(exc) from None
        try:
            yield conn
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise _translate(exc) from None
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise _translate(exc) from None

    # ----------------------------------------------------------------- lifecycle
    async def open(self) -> None:
        if self._conn is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mcp-oauthd-sqlite")
        self._checkpointer = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="mcp-oauthd-sqlite-checkpoint"
        )
        loop = asyncio.get_running_loop()
        try:
            self._conn = await loop.run_in_executor(self._executor, self._open_sync)
            self._reader = self._open_reader()
            self._reader_cursor = self._reader.cursor()
            self._writer = self._open_writer()
        except BaseException:
            self._close_loop_connections()
            if self._conn is not None:
                conn, self._conn = self._conn, None
                await loop.run_in_executor(self._executor, conn.close)
            self._executor.shutdown(wait=False)
            self._executor = None
            self._checkpointer.shutdown(wait=False)
            self._checkpointer = None
            raise

    def _open_reader(self) -> sqlite3.Connection:
        try:
            reader = sqlite3.connect(
                f"file:{self._path.resolve()}?mode=ro",
                uri=True,
                timeout=0.2,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise _translate(exc) from None
        try:
            reader.execute("PRAGMA query_only = 1")
            reader.execute("PRAGMA busy_timeout = 200")  # rare: WAL index recovery
            reader.execute(f"PRAGMA mmap_size = {_MMAP_SIZE}")
        except sqlite3.Error as exc:
            reader.close()
            raise _translate(exc) from None
        return reader

    def _open_writer(self) -> sqlite3.Connection:
        """The event-loop writer (see ``_write_now``); opened after ``_open_sync`` has made
        the file WAL and current, so it only sets its per-connection pragmas."""
        try:
            # Setting up may meet another process's lock (a worker starting beside this
            # one): wait for it as the executor connection does; only afterwards does
            # this connection stop waiting (see below).
            writer = sqlite3.connect(
                self._path,
                timeout=self._busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise _translate(exc) from None
        try:
            # Per connection, so repeated here: the same durability as the executor
            # connection (WAL + NORMAL: a commit is a write() to the WAL, fsynced at
            # checkpoints) and the same foreign-key checks.
            writer.execute("PRAGMA synchronous = NORMAL")
            writer.execute("PRAGMA foreign_keys = ON")
            writer.execute("PRAGMA wal_autocheckpoint = 0")  # see _note_loop_writes
            writer.execute(f"PRAGMA mmap_size = {_MMAP_SIZE}")
            # Never wait on the loop: SQLITE_BUSY sends the work to the executor.
            writer.execute("PRAGMA busy_timeout = 0")
        except sqlite3.Error as exc:
            writer.close()
            raise _translate(exc) from None
        return writer

    def _close_loop_connections(self) -> None:
        cursor, self._reader_cursor = self._reader_cursor, None
        reader, self._reader = self._reader, None
        writer, self._writer = self._writer, None
        for closable in (cursor, reader, writer):
            if closable is not None:
                with contextlib.suppress(sqlite3.Error):
                    closable.close()

    def _read_now(self, query: str, args: tuple[Any, ...]) -> Any:
        """One lookup of at most one row on the event loop (see ``_reader``)."""
        cursor = self._reader_cursor
        if cursor is None:
            raise StorageError("sqlite storage is not open; call open() first")
        try:
            return cursor.execute(query, args).fetchone()
        except sqlite3.Error as exc:
            raise _translate(exc) from None

    def _open_sync(self) -> sqlite3.Connection:
        self._create_file_private()
        try:
            conn = sqlite3.connect(
                self._path,
                timeout=self._busy_timeout,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise _translate(exc) from None
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            self._switch_to_wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            self._migrate(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise _translate(exc) from None
        except BaseException:
            conn.close()
            raise
        return conn

    def _switch_to_wal(self, conn: sqlite3.Connection) -> None:
        """Put the file in WAL mode (a no-op once it is). SQLite does not call the busy
        handler for this switch while another connection holds the RESERVED lock: it
        answers SQLITE_BUSY at once, as it did when several workers opened a new file
        together (one was migrating) and one of them failed to start. So retry, for as
        long as busy_timeout allows."""
        deadline = time.monotonic() + self._busy_timeout
        delay = 0.005
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
                break
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() >= deadline:
                    raise
            _pause(delay)
            delay = min(delay * 2, 0.1)
        if mode is None or str(mode[0]).lower() != "wal":
            raise StorageError("sqlite storage could not switch the database to WAL mode")

    def _create_file_private(self) -> None:
        """Create the database file with mode 0600 (SQLite gives -wal/-shm the same mode)."""
        try:
            fd = os.open(self._path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            return
        except OSError as exc:
            raise StorageUnavailable(
                f"sqlite storage cannot create {self._path} ({exc.strerror})"
            ) from None
        os.close(fd)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("PRAGMA user_version").fetchone()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise StorageError(
                    f"the database {self._path} has schema version {version} but this "
                    f"mcp-oauthd only knows up to version {SCHEMA_VERSION}; it was written by "
                    "a newer mcp-oauthd. Upgrade mcp-oauthd or point storage.path elsewhere."
                )
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[target - 1]:
                    conn.execute(statement)
            if version != SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        if self._executor is None:
            return
        # A running checkpoint finishes (and unpauses the writes) and the writes already
        # handed to us are committed (or sent to the executor) before anything closes.
        while self._checkpointing is not None:
            with contextlib.suppress(Exception):
                await self._checkpointing
            await asyncio.sleep(0)  # its done callback (scheduled, not yet run) runs first
        self._flush_writes()
        executor, self._executor = self._executor, None
        checkpointer, self._checkpointer = self._checkpointer, None
        conn, self._conn = self._conn, None
        loop = asyncio.get_running_loop()
        # The loop connections close first: the executor connection is then the last one
        # of this process, so a checkpoint-on-close happens on the executor, not the loop.
        self._close_loop_connections()
        if checkpointer is not None:
            await loop.run_in_executor(checkpointer, self._close_checkpoint_sync)
            checkpointer.shutdown(wait=True)
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                await loop.run_in_executor(executor, conn.close)
        executor.shutdown(wait=True)

    async def ping(self) -> None:
        await self._run(self._ping_sync)

    def _ping_sync(self) -> None:
        with self._read() as conn:
            conn.execute("SELECT 1").fetchone()

    # ----------------------------------------------------------------- clients
    async def put_client(self, client: ClientRecord) -> None:
        await self._write_now(self._put_client_tx, client)

    @staticmethod
    def _put_client_tx(conn: sqlite3.Connection, client: ClientRecord) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO clients (client_id, expires_at, registered_ip, data) "
            "VALUES (?, ?, ?, ?)",
            (
                client.client_id,
                client.expires_at,
                client.registered_ip,
                client.model_dump_json(),
            ),
        )

    async def get_client(self, client_id: str) -> ClientRecord | None:
        row = self._read_now("SELECT data FROM clients WHERE client_id = ?", (client_id,))
        return None if row is None else _decode_client_memo(row[0])

    async def delete_client(self, client_id: str) -> bool:
        return await self._run(self._delete_client_sync, client_id)

    def _delete_client_sync(self, client_id: str) -> bool:
        with self._write() as conn:
            existed = conn.execute("DELETE FROM clients WHERE client_id = ?", (client_id,)).rowcount
            self._revoke_client_grants(conn, client_id, now=None)
        return existed > 0

    def _revoke_client_grants(
        self, conn: sqlite3.Connection, client_id: str, now: float | None
    ) -> int:
        rows = conn.execute(
            "SELECT grant_id, data FROM grants WHERE client_id = ? AND revoked_at IS NULL",
            (client_id,),
        ).fetchall()
        removed = 0
        for grant_id, data in rows:
            grant = _decode_grant(data)
            revoked_at = now if now is not None else grant.created_at
            removed += self._drop_tokens_of(conn, grant_id)
            self._mark_revoked(conn, grant, revoked_at)
        return removed

    async def list_clients(self) -> list[ClientRecord]:
        return await self._run(self._list_clients_sync)

    async def count_clients_by_ip(self, ip: str, now: float) -> int:
        # On the loop: an index range (clients_registered_ip) bounded by the per-IP cap.
        row = self._read_now(
            "SELECT COUNT(*) FROM clients WHERE registered_ip = ? "
            "AND (expires_at IS NULL OR expires_at > ?)",
            (ip, now),
        )
        return int(row[0])

    def _list_clients_sync(self) -> list[ClientRecord]:
        with self._read() as conn:
            rows = conn.execute("SELECT data FROM clients ORDER BY client_id").fetchall()
        return [_decode_client(r[0]) for r in rows]

    # ----------------------------------------------------------------- ephemeral
    async def put_ephemeral(
        self, kind: str, key: str, data: dict[str, Any], expires_at: float
    ) -> None:
        try:
            text = json.dumps(data)
        except (TypeError, ValueError):
            raise StorageError("ephemeral data must be JSON-serialisable") from None
        await self._write_now(self._put_ephemeral_tx, kind, key, text, expires_at)

    @staticmethod
    def _put_ephemeral_tx(
        conn: sqlite3.Connection, kind: str, key: str, text: str, expires_at: float
    ) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO ephemeral (kind, key, expires_at, data) VALUES (?, ?, ?, ?)",
            (kind, key, expires_at, text),
        )

    async def get_ephemeral(self, kind: str, key: str, now: float) -> dict[str, Any] | None:
        row = self._read_now(
            "SELECT data FROM ephemeral WHERE kind = ? AND key = ? AND expires_at > ?",
            (kind, key, now),
        )
        return None if row is None else _load_object(row[0])

    async def take_ephemeral(self, kind: str, key: str, now: float) -> dict[str, Any] | None:
        row = await self._write_now(self._take_ephemeral_tx, kind, key)
        return None if row is None or _expired(row[0], now) else _load_object(row[1])

    @staticmethod
    def _take_ephemeral_tx(conn: sqlite3.Connection, kind: str, key: str) -> Any:
        row = conn.execute(
            "SELECT expires_at, data FROM ephemeral WHERE kind = ? AND key = ?", (kind, key)
        ).fetchone()
        if row is not None:
            conn.execute("DELETE FROM ephemeral WHERE kind = ? AND key = ?", (kind, key))
        return row

    # ----------------------------------------------------------------- codes
    async def put_code(self, code: CodeRecord) -> None:
        await self._write_now(self._put_code_tx, code)

    @staticmethod
    def _put_code_tx(conn: sqlite3.Connection, code: CodeRecord) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO codes (code_hash, grant_id, expires_at, data) "
            "VALUES (?, ?, ?, ?)",
            (code.code_hash, code.grant_id, code.expires_at, _dump(code)),
        )

    async def consume_code(self, code_hash: str, now: float) -> ConsumeResult:
        return await self._write_now(self._consume_code_tx, code_hash, now)

    @staticmethod
    def _consume_code_tx(conn: sqlite3.Connection, code_hash: str, now: float) -> ConsumeResult:
        row = conn.execute(
            "SELECT rowid, data FROM codes WHERE code_hash = ?", (code_hash,)
        ).fetchone()
        if row is None:
            return ConsumeResult(status=ConsumeStatus.MISSING)
        code = CodeRecord.model_validate_json(row[1])
        if code.consumed_at is not None:
            return ConsumeResult(status=ConsumeStatus.REUSED, code=code)
        code = code.model_copy(update={"consumed_at": now})
        # By rowid, found just above in this transaction: one b-tree walk fewer.
        conn.execute("UPDATE codes SET data = ? WHERE rowid = ?", (_dump(code), row[0]))
        return ConsumeResult(status=ConsumeStatus.OK, code=code)

    # ----------------------------------------------------------------- grants and tokens
    async def create_grant(
        self,
        grant: GrantRecord,
        access: AccessTokenRecord,
        refresh: RefreshTokenRecord | None,
    ) -> None:
        await self._write_now(self._create_grant_tx, grant, access, refresh)

    @classmethod
    def _create_grant_tx(
        cls,
        conn: sqlite3.Connection,
        grant: GrantRecord,
        access: AccessTokenRecord,
        refresh: RefreshTokenRecord | None,
    ) -> None:
        if conn.execute(
            "SELECT 1 FROM grant_tombstones WHERE grant_id = ?", (grant.grant_id,)
        ).fetchone():
            raise GrantRevoked("the grant was revoked before it was created")
        existing = conn.execute(
            "SELECT revoked_at FROM grants WHERE grant_id = ?", (grant.grant_id,)
        ).fetchone()
        if existing is not None:
            if existing[0] is not None:
                raise GrantRevoked("the grant was revoked before it was created")
            raise StorageError("a grant with this id already exists")
        conn.execute(
            "INSERT INTO grants (grant_id, subject, client_id, expires_at, revoked_at, data) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                grant.grant_id,
                grant.subject,
                grant.client_id,
                grant.expires_at,
                grant.revoked_at,
                _dump(grant),
            ),
        )
        cls._insert_access(conn, access)
        if refresh is not None:
            cls._insert_refresh(conn, refresh)

    @staticmethod
    def _insert_access(conn: sqlite3.Connection, access: AccessTokenRecord) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO access_tokens (token_hash, jti, grant_id, expires_at, data) "
            "VALUES (?, ?, ?, ?, ?)",
            (
                access.token_hash,
                access.jti,
                access.grant_id,
                access.expires_at,
                _dump(access),
            ),
        )

    @staticmethod
    def _insert_refresh(conn: sqlite3.Connection, refresh: RefreshTokenRecord) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO refresh_tokens (token_hash, grant_id, expires_at, data) "
            "VALUES (?, ?, ?, ?)",
            (refresh.token_hash, refresh.grant_id, refresh.expires_at, _dump(refresh)),
        )

    @staticmethod
    def _drop_tokens_of(conn: sqlite3.Connection, grant_id: str) -> int:
        removed = conn.execute("DELETE FROM access_tokens WHERE grant_id = ?", (grant_id,)).rowcount
        removed += conn.execute(
            "DELETE FROM refresh_tokens WHERE grant_id = ?", (grant_id,)
        ).rowcount
        return removed

    @staticmethod
    def _mark_revoked(conn: sqlite3.Connection, grant: GrantRecord, now: float) -> None:
        conn.execute(
            "UPDATE grants SET revoked_at = ?, data = ? WHERE grant_id = ?",
            (now, _dump(grant, {"revoked_at": now}), grant.grant_id),
        )

    def _revoke(self, conn: sqlite3.Connection, grant_id: str, now: float) -> bool:
        """Revoke inside the caller's write transaction."""
        self._drop_tokens_of(conn, grant_id)
        row = conn.execute("SELECT data FROM grants WHERE grant_id = ?", (grant_id,)).fetchone()
        if row is None:
            conn.execute(
                "INSERT OR REPLACE INTO grant_tombstones (grant_id, revoked_at, expires_at) "
                "VALUES (?, ?, ?)",
                (grant_id, now, now + self._tombstone_ttl),
            )
            return False
        grant = _decode_grant(row[0])
        if grant.revoked_at is not None:
            return False
        self._mark_revoked(conn, grant, now)
        return True

    async def get_grant(self, grant_id: str) -> GrantRecord | None:
        row = self._read_now("SELECT data FROM grants WHERE grant_id = ?", (grant_id,))
        return None if row is None else _decode_grant(row[0])

    async def list_grants(
        self, subject: str | None = None, client_id: str | None = None
    ) -> list[GrantRecord]:
        return await self._run(self._list_grants_sync, subject, client_id)

    async def count_live_grants(self, now: float) -> int:
        """``CountsForGauges``: counted by SQLite (the ``grants_expires_at`` index), on the
        executor; no row reaches Python."""
        rows = await self._run(
            self._fetch_all,
            "SELECT COUNT(*) FROM grants WHERE revoked_at IS NULL AND expires_at > ?",
            (now,),
        )
        return int(rows[0][0])

    async def count_clients_by_kind(self) -> dict[ClientKind, int]:
        rows = await self._run(
            self._fetch_all,
            "SELECT json_extract(data, '$.kind'), COUNT(*) FROM clients GROUP BY 1",
            (),
        )
        default: ClientKind = ClientRecord.model_fields["kind"].default
        counts: dict[ClientKind, int] = {}
        for kind, count in rows:
            # A row without the field has the model's default; an unknown kind (a newer
            # version's) is not counted under any of ours.
            try:
                key = default if kind is None else ClientKind(kind)
            except ValueError:
                continue
            counts[key] = counts.get(key, 0) + int(count)
        return counts

    def _fetch_all(self, query: str, args: tuple[Any, ...]) -> list[Any]:
        with self._read() as conn:
            return conn.execute(query, args).fetchall()

    def _list_grants_sync(self, subject: str | None, client_id: str | None) -> list[GrantRecord]:
        clauses = ["revoked_at IS NULL"]
        params: list[str] = []
        if subject is not None:
            clauses.append("subject = ?")
            params.append(subject)
        if client_id is not None:
            clauses.append("client_id = ?")
            params.append(client_id)
        # Only constant fragments are joined; every value is a bound parameter.
        query = "SELECT data FROM grants WHERE " + " AND ".join(clauses)  # noqa: S608
        with self._read() as conn:
            rows = conn.execute(query, params).fetchall()
        grants = [_decode_grant(r[0]) for r in rows]
        return sorted(grants, key=lambda g: (g.created_at, g.grant_id))

    async def update_grant_upstream(
        self, grant_id: str, upstream: str | None, upstream_expires_at: float | None
    ) -> bool:
        return await self._write_now(
            self._update_grant_upstream_tx, grant_id, upstream, upstream_expires_at
        )

    @staticmethod
    def _update_grant_upstream_tx(
        conn: sqlite3.Connection,
        grant_id: str,
        upstream: str | None,
        upstream_expires_at: float | None,
    ) -> bool:
        row = conn.execute(
            "SELECT data FROM grants WHERE grant_id = ? AND revoked_at IS NULL", (grant_id,)
        ).fetchone()
        if row is None:
            return False
        text = _dump(
            _decode_grant(row[0]),
            {"upstream": upstream, "upstream_expires_at": upstream_expires_at},
        )
        conn.execute("UPDATE grants SET data = ? WHERE grant_id = ?", (text, grant_id))
        return True

    async def revoke_grant(self, grant_id: str, now: float) -> bool:
        # On the loop too: a grant holds a handful of live tokens (gc removes the rest).
        return await self._write_now(self._revoke, grant_id, now)

    async def get_access_token(self, token_hash: str) -> AccessTokenRecord | None:
        return self.get_access_token_now(token_hash)

    def get_access_token_now(self, token_hash: str) -> AccessTokenRecord | None:
        """The hot path of introspection (``ReadsAccessTokensNow``): one indexed read on the
        loop's reader, which never waits, decoded without validation (``_decode_access``)."""
        row = self._read_now("SELECT data FROM access_tokens WHERE token_hash = ?", (token_hash,))
        return None if row is None else _decode_access(row[0])

    async def get_access_token_by_jti(self, jti: str) -> AccessTokenRecord | None:
        row = self._read_now("SELECT data FROM access_tokens WHERE jti = ? LIMIT 1", (jti,))
        return None if row is None else _decode_access(row[0])

    async def delete_access_token(self, token_hash: str) -> bool:
        return await self._write_now(self._delete_access_tx, token_hash)

    @staticmethod
    def _delete_access_tx(conn: sqlite3.Connection, token_hash: str) -> bool:
        count = conn.execute("DELETE FROM access_tokens WHERE token_hash = ?", (token_hash,))
        return count.rowcount > 0

    async def get_refresh_token(self, token_hash: str) -> RefreshTokenRecord | None:
        row = self._read_now("SELECT data FROM refresh_tokens WHERE token_hash = ?", (token_hash,))
        return None if row is None else _decode_refresh(row[0])

    async def rotate_refresh_token(
        self,
        old_hash: str,
        access: AccessTokenRecord,
        refresh: RefreshTokenRecord,
        successor: str,
        now: float,
        grace: float,
    ) -> RotateResult:
        return await self._write_now(
            self._rotate_tx, old_hash, access, refresh, successor, now, grace
        )

    def _rotate_tx(
        self,
        conn: sqlite3.Connection,
        old_hash: str,
        access: AccessTokenRecord,
        refresh: RefreshTokenRecord,
        successor: str,
        now: float,
        grace: float,
    ) -> RotateResult:
        row = conn.execute(
            "SELECT r.rowid, r.data FROM refresh_tokens r JOIN grants g "
            "ON g.grant_id = r.grant_id WHERE r.token_hash = ? AND g.revoked_at IS NULL",
            (old_hash,),
        ).fetchone()
        if row is None:
            return RotateResult(status=RotateStatus.MISSING)
        old = _decode_refresh(row[1])
        if old.rotated_at is None:
            rotated = _dump(old, {"rotated_at": now, "successor": successor})
            # By rowid, found just above in this transaction: one b-tree walk fewer.
            conn.execute("UPDATE refresh_tokens SET data = ? WHERE rowid = ?", (rotated, row[0]))
            self._insert_access(conn, access)
            self._insert_refresh(conn, refresh)
            return RotateResult(status=RotateStatus.ROTATED, grant_id=old.grant_id)
        if grace > 0 and now - old.rotated_at <= grace:
            return RotateResult(
                status=RotateStatus.GRACE, successor=old.successor, grant_id=old.grant_id
            )
        self._revoke(conn, old.grant_id, now)
        return RotateResult(status=RotateStatus.REUSED, grant_id=old.grant_id)

    # ----------------------------------------------------------------- consent
    async def put_consent(self, consent: ConsentRecord) -> None:
        await self._write_now(self._put_consent_tx, consent)

    @staticmethod
    def _put_consent_tx(conn: sqlite3.Connection, consent: ConsentRecord) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO consents "
            "(subject, client_id, resource, expires_at, data) VALUES (?, ?, ?, ?, ?)",
            (
                consent.subject,
                consent.client_id,
                consent.resource,
                consent.expires_at,
                _dump(consent),
            ),
        )

    async def get_consent(
        self, subject: str, client_id: str, resource: str
    ) -> ConsentRecord | None:
        row = self._read_now(
            "SELECT data FROM consents WHERE subject = ? AND client_id = ? AND resource = ?",
            (subject, client_id, resource),
        )
        return None if row is None else ConsentRecord.model_validate_json(row[0])

    # ----------------------------------------------------------------- signing keys
    async def add_signing_key(self, key: SigningKeyRecord) -> bool:
        return await self._run(self._add_signing_key_sync, key)

    def _add_signing_key_sync(self, key: SigningKeyRecord) -> bool:
        with self._write() as conn:
            # The UNIQUE constraints on kid and generation decide the race.
            inserted = conn.execute(
                "INSERT OR IGNORE INTO signing_keys (kid, generation, data) VALUES (?, ?, ?)",
                (key.kid, key.generation, key.model_dump_json()),
            ).rowcount
        return inserted > 0

    async def list_signing_keys(self) -> list[SigningKeyRecord]:
        return await self._run(self._list_signing_keys_sync)

    def _list_signing_keys_sync(self) -> list[SigningKeyRecord]:
        with self._read() as conn:
            rows = conn.execute("SELECT data FROM signing_keys ORDER BY generation").fetchall()
        return [SigningKeyRecord.model_validate_json(r[0]) for r in rows]

    async def delete_signing_key(self, kid: str) -> bool:
        return await self._run(self._delete_signing_key_sync, kid)

    def _delete_signing_key_sync(self, kid: str) -> bool:
        with self._write() as conn:
            count = conn.execute("DELETE FROM signing_keys WHERE kid = ?", (kid,)).rowcount
        return count > 0

    # ----------------------------------------------------------------- housekeeping
    async def gc(self, now: float) -> int:
        """Delete what expired, in transactions of at most ``GC_BATCH`` rows of a kind.

        One transaction for everything held the file's write lock for as long as the
        deletions took, seconds with a large backlog: every write of every worker waited
        (the loop writer's go to the executor, which was busy with this very gc). Each
        batch is its own executor call, so writes queued meanwhile run between batches.
        """
        removed = 0
        while True:
            count, done = await self._run(self._gc_batch_sync, now, GC_BATCH)
            removed += count
            if done:
                return removed

    def _gc_batch_sync(self, now: float, limit: int) -> tuple[int, bool]:
        """One gc transaction: each kind in ``_GC_ORDER``, at most ``limit`` of its rows;
        (rows removed, whether nothing expired is left). Stops after the first kind that
        used its whole ``limit``: the next batch starts over (finished kinds cost an empty
        index range)."""
        with self._write() as conn:
            removed = 0
            expired_clients = [
                r[0]
                for r in conn.execute(
                    "SELECT client_id FROM clients WHERE expires_at IS NOT NULL "
                    "AND expires_at <= ? LIMIT ?",
                    (now, limit),
                ).fetchall()
            ]
            for client_id in expired_clients:
                removed += conn.execute(
                    "DELETE FROM clients WHERE client_id = ?", (client_id,)
                ).rowcount
                removed += self._revoke_client_grants(conn, client_id, now)
            if len(expired_clients) == limit:
                return removed, False
            for statements in _GC_ORDER:
                counts = [conn.execute(sql, (now, limit)).rowcount for sql in statements]
                removed += sum(counts)
                if counts[-1] == limit:  # the kind's own rows (its tokens go first)
                    return removed, False
        return removed, True


#: Rows of one kind deleted per gc transaction (``SqliteStorage.gc``).
GC_BATCH = 2000


#: The gc statements (parameters: now, limit), by kind, in order; each deletes the
#: ``limit`` rows that expired first. A grant's tokens are deleted with it, in its batch,
#: before it (foreign keys): a token written for an expired grant between two batches
#: cannot make its grant's deletion fail.
_GC_ORDER: Sequence[tuple[str, ...]] = (
    (
        "DELETE FROM codes WHERE rowid IN (SELECT rowid FROM codes "
        "WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2)",
    ),
    (
        "DELETE FROM access_tokens WHERE rowid IN (SELECT rowid FROM access_tokens "
        "WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2)",
    ),
    (
        "DELETE FROM refresh_tokens WHERE rowid IN (SELECT rowid FROM refresh_tokens "
        "WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2)",
    ),
    (
        "DELETE FROM access_tokens WHERE grant_id IN (SELECT grant_id FROM grants "
        "WHERE expires_at <= ?1 ORDER BY expires_at, rowid LIMIT ?2)",
        "DELETE FROM refresh_tokens WHERE grant_id IN (SELECT grant_id FROM grants "
        "WHERE expires_at <= ?1 ORDER BY expires_at, rowid LIMIT ?2)",
        "DELETE FROM grants WHERE grant_id IN (SELECT grant_id FROM grants "
        "WHERE expires_at <= ?1 ORDER BY expires_at, rowid LIMIT ?2)",
    ),
    (
        "DELETE FROM grant_tombstones WHERE rowid IN (SELECT rowid FROM grant_tombstones "
        "WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2)",
    ),
    (
        "DELETE FROM consents WHERE rowid IN (SELECT rowid FROM consents "
        "WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2)",
    ),
    (
        "DELETE FROM ephemeral WHERE rowid IN (SELECT rowid FROM ephemeral "
        "WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2)",
    ),
)


def _load_object(text: str) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise StorageError("sqlite storage holds a malformed ephemeral entry")
    return value


def _build(config: SqliteStorageConfig) -> SqliteStorage:
    return SqliteStorage(config)


# Registered as the ``sqlite`` entry point of ``mcp_oauthd.storage`` (pyproject.toml).
PLUGIN = StoragePlugin(name="sqlite", config_model=SqliteStorageConfig, factory=_build)

"""The SQLite storage backend: the default. One file, survives restarts, safe for several
worker processes on one host.

The stdlib ``sqlite3`` module is blocking, so one connection lives on a dedicated
single-thread executor and every call is handed to it. Each domain operation is one
transaction; writers start with ``BEGIN IMMEDIATE`` so they take the file's write lock up
front and the read-check-write inside them is atomic across threads *and* processes. The
database runs in WAL mode so readers never block the writer.

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
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from mcp_oauthd.config.models import SqliteStorageConfig
from mcp_oauthd.plugins import StoragePlugin

from .base import (
    AccessTokenRecord,
    ClientRecord,
    CodeRecord,
    ConsentRecord,
    ConsumeResult,
    ConsumeStatus,
    GrantRecord,
    GrantRevoked,
    RefreshTokenRecord,
    RotateResult,
    RotateStatus,
    SigningKeyRecord,
    StorageError,
    StorageUnavailable,
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
        # A read-only connection used on the event loop itself for the hot lookups (an
        # access token or a client by key): a WAL read never waits for writers and takes
        # microseconds, less than the round trip to the writer thread would.
        self._reader: sqlite3.Connection | None = None

    # ----------------------------------------------------------------- plumbing
    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None or self._conn is None:
            raise StorageError("sqlite storage is not open; call open() first")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

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
        loop = asyncio.get_running_loop()
        try:
            self._conn = await loop.run_in_executor(self._executor, self._open_sync)
            self._reader = self._open_reader()
        except BaseException:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                await loop.run_in_executor(self._executor, conn.close)
            self._executor.shutdown(wait=False)
            self._executor = None
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
            reader.execute("PRAGMA query_only = 1")
            reader.execute("PRAGMA busy_timeout = 200")  # rare: WAL index recovery
        except sqlite3.Error as exc:
            raise _translate(exc) from None
        return reader

    def _read_now(self, query: str, args: tuple[Any, ...]) -> Any:
        """One primary-key lookup on the event loop (see ``_reader``)."""
        if self._reader is None:
            raise StorageError("sqlite storage is not open; call open() first")
        try:
            return self._reader.execute(query, args).fetchone()
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
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                raise StorageError("sqlite storage could not switch the database to WAL mode")
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
        executor, self._executor = self._executor, None
        conn, self._conn = self._conn, None
        reader, self._reader = self._reader, None
        if reader is not None:
            with contextlib.suppress(sqlite3.Error):
                reader.close()
        if conn is not None:
            loop = asyncio.get_running_loop()
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
        await self._run(self._put_client_sync, client)

    def _put_client_sync(self, client: ClientRecord) -> None:
        with self._write() as conn:
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
        return None if row is None else ClientRecord.model_validate_json(row[0])

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
            grant = GrantRecord.model_validate_json(data)
            revoked_at = now if now is not None else grant.created_at
            removed += self._drop_tokens_of(conn, grant_id)
            self._mark_revoked(conn, grant, revoked_at)
        return removed

    async def list_clients(self) -> list[ClientRecord]:
        return await self._run(self._list_clients_sync)

    async def count_clients_by_ip(self, ip: str, now: float) -> int:
        return await self._run(self._count_clients_by_ip_sync, ip, now)

    def _count_clients_by_ip_sync(self, ip: str, now: float) -> int:
        with self._read() as conn:
            row = conn.execute(
                "SELECT COUNT(*) FROM clients WHERE registered_ip = ? "
                "AND (expires_at IS NULL OR expires_at > ?)",
                (ip, now),
            ).fetchone()
        return int(row[0])

    def _list_clients_sync(self) -> list[ClientRecord]:
        with self._read() as conn:
            rows = conn.execute("SELECT data FROM clients ORDER BY client_id").fetchall()
        return [ClientRecord.model_validate_json(r[0]) for r in rows]

    # ----------------------------------------------------------------- ephemeral
    async def put_ephemeral(
        self, kind: str, key: str, data: dict[str, Any], expires_at: float
    ) -> None:
        try:
            text = json.dumps(data)
        except (TypeError, ValueError):
            raise StorageError("ephemeral data must be JSON-serialisable") from None
        await self._run(self._put_ephemeral_sync, kind, key, text, expires_at)

    def _put_ephemeral_sync(self, kind: str, key: str, text: str, expires_at: float) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO ephemeral (kind, key, expires_at, data) "
                "VALUES (?, ?, ?, ?)",
                (kind, key, expires_at, text),
            )

    async def get_ephemeral(self, kind: str, key: str, now: float) -> dict[str, Any] | None:
        return await self._run(self._get_ephemeral_sync, kind, key, now)

    def _get_ephemeral_sync(self, kind: str, key: str, now: float) -> dict[str, Any] | None:
        with self._read() as conn:
            row = conn.execute(
                "SELECT data FROM ephemeral WHERE kind = ? AND key = ? AND expires_at > ?",
                (kind, key, now),
            ).fetchone()
        return None if row is None else _load_object(row[0])

    async def take_ephemeral(self, kind: str, key: str, now: float) -> dict[str, Any] | None:
        return await self._run(self._take_ephemeral_sync, kind, key, now)

    def _take_ephemeral_sync(self, kind: str, key: str, now: float) -> dict[str, Any] | None:
        with self._write() as conn:
            row = conn.execute(
                "SELECT expires_at, data FROM ephemeral WHERE kind = ? AND key = ?",
                (kind, key),
            ).fetchone()
            if row is None:
                return None
            conn.execute("DELETE FROM ephemeral WHERE kind = ? AND key = ?", (kind, key))
        return None if _expired(row[0], now) else _load_object(row[1])

    # ----------------------------------------------------------------- codes
    async def put_code(self, code: CodeRecord) -> None:
        await self._run(self._put_code_sync, code)

    def _put_code_sync(self, code: CodeRecord) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO codes (code_hash, grant_id, expires_at, data) "
                "VALUES (?, ?, ?, ?)",
                (code.code_hash, code.grant_id, code.expires_at, code.model_dump_json()),
            )

    async def consume_code(self, code_hash: str, now: float) -> ConsumeResult:
        return await self._run(self._consume_code_sync, code_hash, now)

    def _consume_code_sync(self, code_hash: str, now: float) -> ConsumeResult:
        with self._write() as conn:
            row = conn.execute(
                "SELECT data FROM codes WHERE code_hash = ?", (code_hash,)
            ).fetchone()
            if row is None:
                return ConsumeResult(status=ConsumeStatus.MISSING)
            code = CodeRecord.model_validate_json(row[0])
            if code.consumed_at is not None:
                return ConsumeResult(status=ConsumeStatus.REUSED, code=code)
            code = code.model_copy(update={"consumed_at": now})
            conn.execute(
                "UPDATE codes SET data = ? WHERE code_hash = ?",
                (code.model_dump_json(), code_hash),
            )
        return ConsumeResult(status=ConsumeStatus.OK, code=code)

    # ----------------------------------------------------------------- grants and tokens
    async def create_grant(
        self,
        grant: GrantRecord,
        access: AccessTokenRecord,
        refresh: RefreshTokenRecord | None,
    ) -> None:
        await self._run(self._create_grant_sync, grant, access, refresh)

    def _create_grant_sync(
        self, grant: GrantRecord, access: AccessTokenRecord, refresh: RefreshTokenRecord | None
    ) -> None:
        with self._write() as conn:
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
                    grant.model_dump_json(),
                ),
            )
            self._insert_access(conn, access)
            if refresh is not None:
                self._insert_refresh(conn, refresh)

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
                access.model_dump_json(),
            ),
        )

    @staticmethod
    def _insert_refresh(conn: sqlite3.Connection, refresh: RefreshTokenRecord) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO refresh_tokens (token_hash, grant_id, expires_at, data) "
            "VALUES (?, ?, ?, ?)",
            (refresh.token_hash, refresh.grant_id, refresh.expires_at, refresh.model_dump_json()),
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
        revoked = grant.model_copy(update={"revoked_at": now})
        conn.execute(
            "UPDATE grants SET revoked_at = ?, data = ? WHERE grant_id = ?",
            (now, revoked.model_dump_json(), grant.grant_id),
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
        grant = GrantRecord.model_validate_json(row[0])
        if grant.revoked_at is not None:
            return False
        self._mark_revoked(conn, grant, now)
        return True

    async def get_grant(self, grant_id: str) -> GrantRecord | None:
        return await self._run(self._get_grant_sync, grant_id)

    def _get_grant_sync(self, grant_id: str) -> GrantRecord | None:
        with self._read() as conn:
            row = conn.execute("SELECT data FROM grants WHERE grant_id = ?", (grant_id,)).fetchone()
        return None if row is None else GrantRecord.model_validate_json(row[0])

    async def list_grants(
        self, subject: str | None = None, client_id: str | None = None
    ) -> list[GrantRecord]:
        return await self._run(self._list_grants_sync, subject, client_id)

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
        grants = [GrantRecord.model_validate_json(r[0]) for r in rows]
        return sorted(grants, key=lambda g: (g.created_at, g.grant_id))

    async def update_grant_upstream(
        self, grant_id: str, upstream: str | None, upstream_expires_at: float | None
    ) -> bool:
        return await self._run(
            self._update_grant_upstream_sync, grant_id, upstream, upstream_expires_at
        )

    def _update_grant_upstream_sync(
        self, grant_id: str, upstream: str | None, upstream_expires_at: float | None
    ) -> bool:
        with self._write() as conn:
            row = conn.execute(
                "SELECT data FROM grants WHERE grant_id = ? AND revoked_at IS NULL", (grant_id,)
            ).fetchone()
            if row is None:
                return False
            grant = GrantRecord.model_validate_json(row[0]).model_copy(
                update={"upstream": upstream, "upstream_expires_at": upstream_expires_at}
            )
            conn.execute(
                "UPDATE grants SET data = ? WHERE grant_id = ?", (grant.model_dump_json(), grant_id)
            )
        return True

    async def revoke_grant(self, grant_id: str, now: float) -> bool:
        return await self._run(self._revoke_grant_sync, grant_id, now)

    def _revoke_grant_sync(self, grant_id: str, now: float) -> bool:
        with self._write() as conn:
            return self._revoke(conn, grant_id, now)

    async def get_access_token(self, token_hash: str) -> AccessTokenRecord | None:
        row = self._read_now("SELECT data FROM access_tokens WHERE token_hash = ?", (token_hash,))
        return None if row is None else AccessTokenRecord.model_validate_json(row[0])

    async def get_access_token_by_jti(self, jti: str) -> AccessTokenRecord | None:
        row = self._read_now("SELECT data FROM access_tokens WHERE jti = ? LIMIT 1", (jti,))
        return None if row is None else AccessTokenRecord.model_validate_json(row[0])

    async def delete_access_token(self, token_hash: str) -> bool:
        return await self._run(self._delete_access_sync, token_hash)

    def _delete_access_sync(self, token_hash: str) -> bool:
        with self._write() as conn:
            count = conn.execute(
                "DELETE FROM access_tokens WHERE token_hash = ?", (token_hash,)
            ).rowcount
        return count > 0

    async def get_refresh_token(self, token_hash: str) -> RefreshTokenRecord | None:
        return await self._run(self._get_refresh_sync, token_hash)

    def _get_refresh_sync(self, token_hash: str) -> RefreshTokenRecord | None:
        with self._read() as conn:
            row = conn.execute(
                "SELECT data FROM refresh_tokens WHERE token_hash = ?", (token_hash,)
            ).fetchone()
        return None if row is None else RefreshTokenRecord.model_validate_json(row[0])

    async def rotate_refresh_token(
        self,
        old_hash: str,
        access: AccessTokenRecord,
        refresh: RefreshTokenRecord,
        successor: str,
        now: float,
        grace: float,
    ) -> RotateResult:
        return await self._run(self._rotate_sync, old_hash, access, refresh, successor, now, grace)

    def _rotate_sync(
        self,
        old_hash: str,
        access: AccessTokenRecord,
        refresh: RefreshTokenRecord,
        successor: str,
        now: float,
        grace: float,
    ) -> RotateResult:
        with self._write() as conn:
            row = conn.execute(
                "SELECT r.data FROM refresh_tokens r JOIN grants g ON g.grant_id = r.grant_id "
                "WHERE r.token_hash = ? AND g.revoked_at IS NULL",
                (old_hash,),
            ).fetchone()
            if row is None:
                return RotateResult(status=RotateStatus.MISSING)
            old = RefreshTokenRecord.model_validate_json(row[0])
            if old.rotated_at is None:
                rotated = old.model_copy(update={"rotated_at": now, "successor": successor})
                conn.execute(
                    "UPDATE refresh_tokens SET data = ? WHERE token_hash = ?",
                    (rotated.model_dump_json(), old_hash),
                )
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
        await self._run(self._put_consent_sync, consent)

    def _put_consent_sync(self, consent: ConsentRecord) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO consents "
                "(subject, client_id, resource, expires_at, data) VALUES (?, ?, ?, ?, ?)",
                (
                    consent.subject,
                    consent.client_id,
                    consent.resource,
                    consent.expires_at,
                    consent.model_dump_json(),
                ),
            )

    async def get_consent(
        self, subject: str, client_id: str, resource: str
    ) -> ConsentRecord | None:
        return await self._run(self._get_consent_sync, subject, client_id, resource)

    def _get_consent_sync(
        self, subject: str, client_id: str, resource: str
    ) -> ConsentRecord | None:
        with self._read() as conn:
            row = conn.execute(
                "SELECT data FROM consents WHERE subject = ? AND client_id = ? AND resource = ?",
                (subject, client_id, resource),
            ).fetchone()
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
        return await self._run(self._gc_sync, now)

    def _gc_sync(self, now: float) -> int:
        with self._write() as conn:
            removed = 0
            expired_clients = [
                r[0]
                for r in conn.execute(
                    "SELECT client_id FROM clients WHERE expires_at IS NOT NULL "
                    "AND expires_at <= ?",
                    (now,),
                ).fetchall()
            ]
            for client_id in expired_clients:
                removed += conn.execute(
                    "DELETE FROM clients WHERE client_id = ?", (client_id,)
                ).rowcount
                removed += self._revoke_client_grants(conn, client_id, now)
            for statement in _GC_STATEMENTS:
                removed += conn.execute(statement, (now,)).rowcount
        return removed


#: Run in order: tokens of expired grants go before their grants (foreign keys).
_GC_STATEMENTS: Sequence[str] = (
    "DELETE FROM codes WHERE expires_at <= ?",
    "DELETE FROM access_tokens WHERE expires_at <= ?1 "
    "OR grant_id IN (SELECT grant_id FROM grants WHERE expires_at <= ?1)",
    "DELETE FROM refresh_tokens WHERE expires_at <= ?1 "
    "OR grant_id IN (SELECT grant_id FROM grants WHERE expires_at <= ?1)",
    "DELETE FROM grants WHERE expires_at <= ?",
    "DELETE FROM grant_tombstones WHERE expires_at <= ?",
    "DELETE FROM consents WHERE expires_at <= ?",
    "DELETE FROM ephemeral WHERE expires_at <= ?",
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

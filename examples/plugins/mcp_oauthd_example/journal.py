"""``journal``: the in-memory backend made durable by a write-ahead journal.

Every operation that changes state is appended to a JSON-lines file *before* it runs
against an in-process :class:`~mcp_oauthd.storage.memory.MemoryStorage`; at ``open()``
the file is replayed into a fresh one. Reads never touch the file. Replaying the same
operations with the same arguments (``now`` included: time is always passed in) rebuilds
the same state, because the memory backend is deterministic. So tokens, grants, clients
and consents survive a restart with nothing but a file::

    storage:
      type: journal
      path: /var/lib/mcp-oauthd/journal.jsonl

Why it keeps the storage contract:

- atomicity: each memory-backend operation runs to completion without yielding to the
  event loop, and the journal write before it is synchronous, so no other coroutine can
  interleave with "write the entry, apply it";
- one process only: ``open()`` takes an exclusive ``flock`` on the file, so a second
  process (another worker or replica) fails at start-up with a clear error instead of
  silently forking the state; use ``server.workers: 1``;
- crash safety: entries are flushed (and by default ``fsync``-ed) before they take
  effect; a torn last line from a crash is dropped at the next ``open()``. An operation
  that was refused (``GrantRevoked``) is refused again on replay and skipped;
- nothing in clear that the other backends keep hashed: the journal holds exactly what
  the sqlite file would (token hashes, encrypted upstream tokens); it is created 0600.

The limit: the journal only grows, and start-up time grows with it. It suits a personal
or small deployment; for anything bigger use ``sqlite`` or ``redis``.

Which methods write is decided by name, so the wrapper follows the Storage protocol as
it grows: ``get_*``, ``list_*``, ``count_*`` and ``ping`` read, everything else writes.
"""

from __future__ import annotations

import contextlib
import fcntl
import inspect
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any, Literal

from pydantic import Field, field_validator

from mcp_oauthd.config.models import PluginConfig
from mcp_oauthd.plugins import StoragePlugin
from mcp_oauthd.storage import base
from mcp_oauthd.storage.base import Record, StorageError, StorageUnavailable
from mcp_oauthd.storage.memory import MemoryStorage

_READ_PREFIXES = ("get_", "list_", "count_")
_RECORDS: dict[str, type[Record]] = {
    name: cls
    for name, cls in vars(base).items()
    if isinstance(cls, type) and issubclass(cls, Record) and cls is not Record
}


class JournalStorageConfig(PluginConfig):
    """The ``storage:`` section for ``type: journal``."""

    type: Literal["journal"] = "journal"
    path: Path = Field(description="The journal file (JSON lines), created if missing.")
    fsync: bool = Field(
        True, description="fsync after every write: survives a power cut, costs latency."
    )

    @field_validator("path")
    @classmethod
    def _directory_exists(cls, value: Path) -> Path:
        parent = value.expanduser().resolve().parent
        if not parent.is_dir():
            raise ValueError(f"directory {parent} does not exist; create it or choose another path")
        return value


def _encode(value: Any) -> dict[str, Any]:
    if isinstance(value, Record):
        return {"record": type(value).__name__, "data": value.model_dump(mode="json")}
    return {"value": value}


def _decode(item: dict[str, Any]) -> Any:
    if "record" in item:
        return _RECORDS[item["record"]].model_validate(item["data"])
    return item["value"]


class JournalStorage:
    """Implements ``mcp_oauthd.storage.base.Storage`` (see the module docstring)."""

    name = "journal"

    def __init__(self, config: JournalStorageConfig) -> None:
        self._path = config.path.expanduser()
        self._fsync = config.fsync
        self._memory = MemoryStorage()
        self._file: IO[bytes] | None = None

    # ----------------------------------------------------------------- lifecycle
    async def open(self) -> None:
        try:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as exc:
            raise StorageUnavailable(
                f"journal {self._path} cannot be opened ({exc.strerror})"
            ) from None
        file = os.fdopen(fd, "a+b")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            file.close()
            raise StorageError(
                f"journal {self._path} is in use by another process; the journal backend "
                "serves one process (server.workers: 1)"
            ) from None
        try:
            await self._replay(file)
        except BaseException:
            file.close()
            raise
        self._file = file

    async def _replay(self, file: IO[bytes]) -> None:
        file.seek(0)
        content = file.read()
        complete = content.rfind(b"\n") + 1
        if complete < len(content):
            # A torn last entry: the process died while writing it, so the operation
            # never ran. Drop it, or the next entry would be appended to it.
            file.truncate(complete)
        for number, line in enumerate(content[:complete].splitlines(), start=1):
            try:
                entry = json.loads(line)
                method: Callable[..., Awaitable[Any]] = getattr(self._memory, entry["op"])
                args = [_decode(a) for a in entry["args"]]
                kwargs = {k: _decode(v) for k, v in entry["kwargs"].items()}
            except (ValueError, KeyError, TypeError, AttributeError):
                raise StorageError(f"journal {self._path}: entry {number} is corrupt") from None
            # Refused the first time too (the caller got the error then): skip it.
            with contextlib.suppress(StorageError):
                await method(*args, **kwargs)

    async def close(self) -> None:
        if self._file is not None:
            self._file.close()  # also releases the lock
            self._file = None

    async def ping(self) -> None:
        if self._file is None or self._file.closed:
            raise StorageUnavailable("the journal is not open")

    # ----------------------------------------------------------------- operations
    def _append(self, op: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self._file is None:
            raise StorageUnavailable("the journal is not open")
        entry = {
            "op": op,
            "args": [_encode(a) for a in args],
            "kwargs": {k: _encode(v) for k, v in kwargs.items()},
        }
        try:
            line = json.dumps(entry, allow_nan=False)
        except (TypeError, ValueError):
            raise StorageError("journal entries must be JSON-serialisable") from None
        try:
            self._file.write(line.encode() + b"\n")
            self._file.flush()
            if self._fsync:
                os.fsync(self._file.fileno())
        except OSError as exc:
            raise StorageUnavailable(f"the journal cannot be written ({exc.strerror})") from None

    def __getattr__(self, op: str) -> Any:
        # Only called for what this class does not define: the domain operations.
        method = getattr(self._memory, op)
        if op.startswith(_READ_PREFIXES) or op.startswith("_"):
            return method

        signature = inspect.signature(method)

        async def write(*args: Any, **kwargs: Any) -> Any:
            signature.bind(*args, **kwargs)  # a wrong call fails here, never in the journal
            self._append(op, args, kwargs)  # write-ahead: journaled before it takes effect
            return await method(*args, **kwargs)

        return write


def _build(config: JournalStorageConfig) -> JournalStorage:
    return JournalStorage(config)


#: What the ``journal`` entry point names (see this distribution's pyproject.toml).
PLUGIN = StoragePlugin(name="journal", config_model=JournalStorageConfig, factory=_build)

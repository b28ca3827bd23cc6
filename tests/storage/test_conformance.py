"""The shared storage conformance suite run against the built-in backends, and the gc loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mcp_oauthd.clock import FakeClock
from mcp_oauthd.config.models import MemoryStorageConfig, SqliteStorageConfig
from mcp_oauthd.storage import Storage, StorageError, StorageUnavailable, build_storage
from mcp_oauthd.storage.gc import run_gc_forever
from mcp_oauthd.storage.memory import MemoryStorage
from mcp_oauthd.storage.sqlite import SqliteStorage
from mcp_oauthd.testing.storage_conformance import NOW, StorageConformance, make_code


class TestMemoryStorage(StorageConformance):
    @pytest.fixture
    async def storage(self) -> AsyncIterator[Storage]:
        backend = MemoryStorage()
        await backend.open()
        yield backend
        await backend.close()


class TestSqliteStorage(StorageConformance):
    @pytest.fixture
    async def storage(self, tmp_path: Path) -> AsyncIterator[Storage]:
        backend = SqliteStorage(SqliteStorageConfig(path=tmp_path / "oauthd.db"))
        await backend.open()
        yield backend
        await backend.close()


# --------------------------------------------------------------------------- build_storage
def test_build_storage_makes_a_memory_backend_from_its_config() -> None:
    backend = build_storage(MemoryStorageConfig())
    assert isinstance(backend, MemoryStorage)
    assert backend.name == "memory"


def test_build_storage_makes_a_sqlite_backend_from_its_config(tmp_path: Path) -> None:
    backend = build_storage(SqliteStorageConfig(path=tmp_path / "x.db"))
    assert isinstance(backend, SqliteStorage)
    assert backend.name == "sqlite"
    assert not (tmp_path / "x.db").exists()  # nothing touched before open()


# --------------------------------------------------------------------------- gc loop
class RecordingLogger:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def info(self, event: str, /, **kw: Any) -> None:
        self.events.append(("info", event, kw))

    def warning(self, event: str, /, **kw: Any) -> None:
        self.events.append(("warning", event, kw))

    def exception(self, event: str, /, **kw: Any) -> None:
        self.events.append(("exception", event, kw))


class FlakyStorage(MemoryStorage):
    """Fails its first gc passes in the given ways, then behaves."""

    def __init__(self, failures: list[BaseException]) -> None:
        super().__init__()
        self.failures = failures
        self.gc_calls: list[float] = []

    async def gc(self, now: float) -> int:
        self.gc_calls.append(now)
        if self.failures:
            raise self.failures.pop(0)
        return await super().gc(now)


def stepping_sleep(clock: FakeClock, rounds: int) -> tuple[list[float], Any]:
    """A ``sleep`` that advances the fake clock and cancels the loop after ``rounds``."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)
        if len(slept) >= rounds:
            raise asyncio.CancelledError

    return slept, sleep


async def test_the_gc_loop_collects_with_the_clocks_time_every_interval() -> None:
    clock = FakeClock(NOW)
    storage = FlakyStorage([])
    await storage.put_code(make_code(now=NOW, ttl=30))
    logger = RecordingLogger()
    slept, sleep = stepping_sleep(clock, rounds=3)

    with pytest.raises(asyncio.CancelledError):
        await run_gc_forever(storage, clock, 60.0, logger, sleep=sleep)

    assert storage.gc_calls == [NOW, NOW + 60, NOW + 120]
    assert slept == [60.0, 60.0, 60.0]
    assert [(lvl, ev, kw["removed"]) for lvl, ev, kw in logger.events] == [
        ("info", "storage_gc", 1)
    ]


async def test_the_gc_loop_logs_storage_failures_and_keeps_going() -> None:
    clock = FakeClock(NOW)
    storage = FlakyStorage([StorageUnavailable("database is locked"), RuntimeError("bug")])
    logger = RecordingLogger()
    _, sleep = stepping_sleep(clock, rounds=3)

    with pytest.raises(asyncio.CancelledError):
        await run_gc_forever(storage, clock, 5.0, logger, sleep=sleep)

    assert len(storage.gc_calls) == 3
    levels = [(lvl, ev) for lvl, ev, _ in logger.events]
    assert levels == [("warning", "storage_gc_failed"), ("exception", "storage_gc_crashed")]
    assert logger.events[0][2]["kind"] == "StorageUnavailable"


async def test_the_gc_loop_stops_when_its_task_is_cancelled() -> None:
    storage = MemoryStorage()
    started = asyncio.Event()

    async def sleep(seconds: float) -> None:
        started.set()
        await asyncio.Event().wait()  # parked until cancelled

    task = asyncio.create_task(
        run_gc_forever(storage, FakeClock(NOW), 60.0, RecordingLogger(), sleep=sleep)
    )
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def test_the_gc_loop_refuses_a_non_positive_interval() -> None:
    with pytest.raises(ValueError):
        await run_gc_forever(MemoryStorage(), FakeClock(NOW), 0, RecordingLogger())


def test_storage_unavailable_is_a_storage_error() -> None:
    assert issubclass(StorageUnavailable, StorageError)

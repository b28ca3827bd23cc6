"""The background task that garbage-collects expired storage records."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from mcp_oauthd.clock import Clock

from .base import Storage, StorageError


class GcLogger(Protocol):
    """The slice of a structlog logger the loop uses."""

    def info(self, event: str, /, **kw: Any) -> Any: ...

    def warning(self, event: str, /, **kw: Any) -> Any: ...

    def exception(self, event: str, /, **kw: Any) -> Any: ...


async def run_gc_forever(
    storage: Storage,
    clock: Clock,
    interval: float,
    logger: GcLogger,
    *,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> None:
    """Run ``storage.gc(clock.now())`` every ``interval`` seconds until cancelled.

    A failing pass is logged and the loop goes on; only cancellation stops it. ``sleep``
    is injectable so tests drive the loop without waiting.
    """
    if interval <= 0:
        raise ValueError("the gc interval must be positive")
    while True:
        try:
            removed = await storage.gc(clock.now())
        except StorageError as exc:
            logger.warning(
                "storage_gc_failed", backend=storage.name, error=str(exc), kind=type(exc).__name__
            )
        except Exception:  # never let the housekeeping task die
            logger.exception("storage_gc_crashed", backend=storage.name)
        else:
            if removed:
                logger.info("storage_gc", backend=storage.name, removed=removed)
        await sleep(interval)

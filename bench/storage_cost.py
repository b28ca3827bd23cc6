"""What the storage alone spends on a refresh grant: its three calls (``get_refresh_token``,
``get_grant``, ``rotate_refresh_token``), 64 at a time as under 64 connections, on state
like the benchmark's, with the records made beforehand. No HTTP, no token service.

    .venv/bin/python -m bench.storage_cost [--backend memory|sqlite] [--grants N]
        [--refreshes N]

It prints CPU microseconds per refresh: the whole process (SQLite's checkpoint thread
included) and the event-loop thread alone. Set against the bare aiohttp baseline's CPU
per request (``python -m bench.inproc baseline``), it bounds the refresh ratio a backend
can reach at all: even with no other work, a refresh costs the baseline plus this.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import configs
from bench.seeding import SeededGrant, SeedSpec, grant_of
from mcp_oauthd.config.models import SqliteStorageConfig
from mcp_oauthd.storage.base import (
    AccessTokenRecord,
    RefreshTokenRecord,
    RotateStatus,
    Storage,
)
from mcp_oauthd.storage.memory import MemoryStorage
from mcp_oauthd.storage.sqlite import SqliteStorage
from mcp_oauthd.testing.storage_conformance import make_access, make_refresh

CONNECTIONS = 64
#: What a refresh seals for its grace window is about this long.
SUCCESSOR = "s" * 300
GRACE = 30.0


@dataclass(frozen=True)
class Cost:
    backend: str
    refreshes: int
    process_us: float
    loop_us: float

    def line(self) -> str:
        return (
            f"{self.backend}: the storage's work of a refresh {self.process_us:.1f} us CPU "
            f"(event-loop thread {self.loop_us:.1f}), {self.refreshes:,} refreshes"
        )


def _storage(backend: str, directory: Path) -> Storage:
    if backend == "memory":
        return MemoryStorage()
    return SqliteStorage(SqliteStorageConfig(path=str(directory / "state.db")))


async def _refresh(
    storage: Storage,
    item: tuple[SeededGrant, AccessTokenRecord, RefreshTokenRecord],
    now: float,
) -> None:
    """The token service's storage calls for one refresh (service/token.py)."""
    seeded, access, refresh = item
    old = await storage.get_refresh_token(seeded.refresh.token_hash)
    if old is None:
        raise RuntimeError("a seeded refresh token is missing")
    grant = await storage.get_grant(old.grant_id)
    if grant is None:
        raise RuntimeError("a seeded grant is missing")
    result = await storage.rotate_refresh_token(
        old.token_hash, access, refresh, SUCCESSOR, now, GRACE
    )
    if result.status is not RotateStatus.ROTATED:  # measuring anything else is pointless
        raise RuntimeError(f"a rotation was {result.status.value}, not rotated")


async def measure(backend: str, grants: int, refreshes: int) -> Cost:
    now = time.time()
    spec = SeedSpec(
        salt="storage-cost",
        now=now,
        grants=grants,
        client_id=configs.CLIENT_ID,
        resource=configs.RESOURCE,
    )
    with tempfile.TemporaryDirectory(prefix="bench-storage-cost-") as tmp:
        storage = _storage(backend, Path(tmp))
        await storage.open()
        try:
            seeded = [grant_of(spec, index) for index in range(grants)]
            for item in seeded:
                await storage.create_grant(item.grant, item.access, item.refresh)
            work = [
                (item, make_access(item.grant, now=now), make_refresh(item.grant, now=now))
                for item in seeded[:refreshes]
            ]
            # The seeding's own records would otherwise be scanned by every collection
            # of the cyclic GC during the measurement; the store's are, as in a daemon.
            del seeded
            gc.collect()
            started, started_loop = time.process_time(), time.thread_time()
            for first in range(0, len(work), CONNECTIONS):
                batch = work[first : first + CONNECTIONS]
                await asyncio.gather(*(_refresh(storage, item, now) for item in batch))
            process = time.process_time() - started
            loop = time.thread_time() - started_loop
        finally:
            await storage.close()
    return Cost(backend, len(work), process / len(work) * 1e6, loop / len(work) * 1e6)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.storage_cost", description=__doc__)
    parser.add_argument("--backend", choices=("memory", "sqlite"), default="sqlite")
    parser.add_argument("--grants", type=int, default=80_000, help="grants stored (80000)")
    parser.add_argument("--refreshes", type=int, default=12_800, help="refreshes measured (12800)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 0 < args.refreshes <= args.grants:
        print("--refreshes must be between 1 and --grants", file=sys.stderr)
        return 2
    print(asyncio.run(measure(args.backend, args.grants, args.refreshes)).line())
    return 0


if __name__ == "__main__":
    sys.exit(main())

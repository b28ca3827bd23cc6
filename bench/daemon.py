"""Seed, then serve: the real ``mcp-oauthd serve`` with state written beforehand.

    python -m bench.daemon --config CFG.yaml --seed SPEC.json --pools DIR --report OUT.json

Seeds the configured storage (see :mod:`bench.seeding`), writes the pool files and a small
report, then runs ``mcp_oauthd.cli.main(["serve", "--config", CFG])`` in this same process:
the shipped code path (logging set up by the CLI, ``server.run``, ``create_app``,
workers, signal handling). For sqlite and redis the seeding storage is closed first and the
daemon opens its own. Memory storage lives in one process, so for it the seeded
``MemoryStorage`` is handed to ``create_app`` by replacing the ``build_storage`` name the
app module looks up — the one thing that differs from a plain ``mcp-oauthd serve``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from bench.seeding import SeedSpec, seed
from mcp_oauthd import app as app_module
from mcp_oauthd import cli
from mcp_oauthd.config.loader import load_config
from mcp_oauthd.storage import build_storage
from mcp_oauthd.storage.base import Storage


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--seed", type=Path, help="a SeedSpec JSON file; omit: no seeding")
    parser.add_argument("--pools", type=Path, help="where the pool files go")
    parser.add_argument("--report", type=Path, help="where the seeding report goes")
    args = parser.parse_args(argv)

    config = load_config(args.config)
    storage = build_storage(config.storage)
    if args.seed is not None:
        spec = SeedSpec.from_json(args.seed.read_text())
        pools = args.pools or args.seed.parent

        async def run_seed() -> dict[str, Any]:
            report = await seed(storage, config, spec, pools)
            if storage.name != "memory":
                await storage.close()
            return report

        report = asyncio.run(run_seed())
        if args.report is not None:
            args.report.write_text(json.dumps(report))
    if storage.name == "memory":
        seeded: Storage = storage

        def prebuilt(config: object) -> Storage:
            return seeded

        app_module.build_storage = prebuilt  # type: ignore[attr-defined]
    return cli.main(["serve", "--config", str(args.config)])


if __name__ == "__main__":
    sys.exit(main())

"""Command-line options of ``python -m bench`` (pure; unit-tested)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.scenarios import SCENARIO_NAMES

BACKENDS = ("memory", "sqlite", "redis")
EXTRAS = ("workers", "state", "c10k", "rss", "startup")
BIG_STATE = 1_000_000
#: Scenarios whose cost does not depend on the storage backend: by default they run on
#: memory only (``--scenarios`` naming them runs them on every chosen backend).
MEMORY_ONLY = ("discovery", "verify-jwt")
DEFAULT_POOL = 160_000
REDIS_POOL = 150_000


@dataclass(frozen=True)
class Options:
    backends: tuple[str, ...]
    scenarios: tuple[str, ...]
    scenarios_chosen: bool  # False: the default matrix (MEMORY_ONLY on memory only)
    connections: tuple[int, ...]
    warmup: float
    duration: float
    threads: int
    timeout: float
    pool: int | None  # None: DEFAULT_POOL, REDIS_POOL on redis (see pool_for)
    access_pool: int
    jwt_grants: int
    extras: tuple[str, ...]
    state_grants: int
    state_backends: tuple[str, ...]
    c10k_connections: int
    c10k_duration: float
    rss_grants: int
    redis_url: str | None
    out: Path | None
    profile: tuple[str, ...]
    profile_backend: str
    profile_seconds: float
    profile_gil: bool
    keep: bool


def _csv(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _choices(
    allowed: Sequence[str], *, allow_empty: bool = False
) -> Callable[[str], tuple[str, ...]]:
    def parse(value: str) -> tuple[str, ...]:
        if value in ("", "none") and allow_empty:
            return ()
        if value == "all":
            return tuple(allowed)
        items = _csv(value)
        unknown = [i for i in items if i not in allowed]
        if unknown:
            raise argparse.ArgumentTypeError(
                f"unknown: {', '.join(unknown)} (choose from {', '.join(allowed)}, or all)"
            )
        return items

    return parse


def _ints(value: str) -> tuple[int, ...]:
    try:
        numbers = tuple(int(item) for item in _csv(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a list of numbers") from None
    if not numbers or any(n < 1 for n in numbers):
        raise argparse.ArgumentTypeError("connection counts are positive numbers")
    return numbers


def _seconds(value: str) -> float:
    text = value.strip().lower().removesuffix("s")
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if seconds < 0:
        raise argparse.ArgumentTypeError("a duration cannot be negative")
    return seconds


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark mcp-oauthd against a bare aiohttp baseline (see bench/README.md).",
    )
    add = p.add_argument
    add("--backends", type=_choices(BACKENDS), default=BACKENDS, help="memory,sqlite,redis")
    add(
        "--scenarios",
        type=_choices(SCENARIO_NAMES),
        default=None,
        help=f"{','.join(SCENARIO_NAMES)} or all (default: all on memory; on sqlite and "
        f"redis all but {' and '.join(MEMORY_ONLY)}, which do not depend on storage)",
    )
    add("--connections", type=_ints, default=(16, 64, 256), help="wrk -c values (16,64,256)")
    add("--warmup", type=_seconds, default=2.0, help="warm-up per scenario, at 64 conns (2s)")
    add("--duration", type=_seconds, default=4.0, help="measurement per connection count (4s)")
    add("--threads", type=int, default=2, help="wrk threads (2)")
    add("--timeout", type=_seconds, default=10.0, help="wrk per-request timeout (10s)")
    add(
        "--pool",
        type=int,
        default=None,
        help=f"single-use refresh tokens and codes minted per backend (default "
        f"{DEFAULT_POOL} on memory and sqlite, {REDIS_POOL} on redis, whose seeding is "
        "slower; a refresh scenario at ~8,000 req/s uses ~100,000)",
    )
    add("--access-pool", type=int, default=10_000, help="distinct access tokens cycled (10000)")
    add("--jwt-grants", type=int, default=10_000, help="JWT grants seeded per backend (10000)")
    add(
        "--extras",
        type=_choices(EXTRAS, allow_empty=True),
        default=EXTRAS,
        help="workers,state,c10k,rss,startup, all or none",
    )
    add(
        "--state-grants",
        type=int,
        default=100_000,
        help="the large state of the state-size comparison (100000; vs 1000)",
    )
    add(
        "--big-state",
        action="store_true",
        help=f"compare with {BIG_STATE:,} grants instead (seeding takes minutes)",
    )
    add(
        "--state-backends",
        type=_choices(BACKENDS),
        default=("memory", "sqlite"),
        help="backends of the state-size comparison (memory,sqlite)",
    )
    add("--c10k-connections", type=int, default=10_000, help="the many-connections test (10000)")
    add("--c10k-duration", type=_seconds, default=8.0, help="its duration (8s)")
    add("--rss-grants", type=int, default=100_000, help="grants for the memory RSS figure")
    add(
        "--redis-url",
        default=None,
        help="use this Redis (own key prefix, removed afterwards); default: a private "
        "redis-server on a free port",
    )
    add("--out", type=Path, default=None, help="results JSON (default bench/results/<time>.json)")
    add(
        "--profile",
        type=_choices(SCENARIO_NAMES, allow_empty=True),
        default=(),
        help="py-spy profile these scenarios (e.g. introspect-opaque,refresh)",
    )
    add("--profile-backend", choices=BACKENDS, default="memory", help="where to profile (memory)")
    add("--profile-seconds", type=_seconds, default=15.0, help="profile length (15s)")
    add(
        "--profile-gil",
        action="store_true",
        help="sample only while the GIL is held (Python CPU; drops time in system calls)",
    )
    add("--keep", action="store_true", help="keep the temporary directory (configs, logs)")
    add("--quick", action="store_true", help="smoke test: 1 s runs, small pools, one c")
    return p


def parse(argv: Sequence[str] | None = None) -> Options:
    args = parser().parse_args(argv)
    connections = args.connections
    warmup, duration = args.warmup, args.duration
    pool, access_pool, jwt_grants = args.pool, args.access_pool, args.jwt_grants
    state_grants = BIG_STATE if args.big_state else args.state_grants
    rss_grants, c10k_duration = args.rss_grants, args.c10k_duration
    if args.quick:
        connections = (64,)
        warmup, duration = 1.0, 1.0
        pool, access_pool, jwt_grants = 5_000, 1_000, 1_000
        state_grants, rss_grants, c10k_duration = 10_000, 10_000, 2.0
    return Options(
        backends=tuple(args.backends),
        scenarios=tuple(args.scenarios or SCENARIO_NAMES),
        scenarios_chosen=args.scenarios is not None,
        connections=tuple(connections),
        warmup=warmup,
        duration=duration,
        threads=args.threads,
        timeout=args.timeout,
        pool=pool,
        access_pool=access_pool,
        jwt_grants=jwt_grants,
        extras=tuple(args.extras),
        state_grants=state_grants,
        state_backends=tuple(args.state_backends),
        c10k_connections=args.c10k_connections,
        c10k_duration=c10k_duration,
        rss_grants=rss_grants,
        redis_url=args.redis_url,
        out=args.out,
        profile=tuple(args.profile),
        profile_backend=args.profile_backend,
        profile_seconds=args.profile_seconds,
        profile_gil=args.profile_gil,
        keep=args.keep,
    )


def scenarios_for(opts: Options, backend: str) -> tuple[str, ...]:
    """The scenarios run on ``backend``."""
    if opts.scenarios_chosen or backend == "memory":
        return opts.scenarios
    return tuple(s for s in opts.scenarios if s not in MEMORY_ONLY)


def pool_for(opts: Options, backend: str) -> int:
    """Single-use values seeded per kind on ``backend``."""
    if opts.pool is not None:
        return opts.pool
    return REDIS_POOL if backend == "redis" else DEFAULT_POOL

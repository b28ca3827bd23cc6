"""Seeding state fast, straight through the storage layer.

A ``SeedSpec`` (JSON) says how many grants (each with an access and a refresh token, as a
code exchange leaves them) and how many authorization codes to create. Token values are
derived from the spec's salt (``token_value``), so they are unique per run and never
random-looking secrets from a real deployment. Records are the real record models
(``GrantRecord``/``AccessTokenRecord``/...), written:

- **memory**: through the storage API (``create_grant``, ``put_code``) — in the daemon's
  own process, since memory storage lives there;
- **sqlite**: with raw batched ``INSERT``s into the schema the backend created (one
  transaction per batch) — about 20x faster than one transaction per grant; the result is
  then read back through the storage API to prove the rows are what the backend expects;
- **redis**: through the storage API (its own atomic Lua scripts), many calls in flight on
  the connection pool.

JWT access tokens (``tokens.format: jwt``) are signed by the daemon's own
``SigningKeyManager`` on the same storage, so the daemon publishes and honours them.

The values the load generator needs are written to pool files, one per line:
``access.txt`` (a sample of access tokens, shuffled), ``refresh.txt`` and ``codes.txt``
(every refresh token and code: each is used once).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import random
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcp_oauthd.clock import SystemClock
from mcp_oauthd.config.models import Config, SqliteStorageConfig
from mcp_oauthd.oauth.pkce import s256
from mcp_oauthd.oauth.tokens import ACCESS_PREFIX, CODE_PREFIX, REFRESH_PREFIX, token_hash
from mcp_oauthd.security.crypto import b64u
from mcp_oauthd.security.keys import load_key_material
from mcp_oauthd.service.jwt import SigningKeyManager
from mcp_oauthd.storage.base import (
    AccessTokenRecord,
    CodeRecord,
    GrantRecord,
    RefreshTokenRecord,
    Storage,
)

#: One PKCE verifier for every seeded code (each code still checks it).
CODE_VERIFIER = "bench-verifier-" + "0123456789abcdefghijklmnopqrstuvwxyz-._~ABCDE"
SQLITE_BATCH = 20_000
REDIS_IN_FLIGHT = 64
DAY = 86_400.0


@dataclass(frozen=True)
class SeedSpec:
    salt: str
    now: float
    grants: int = 0
    codes: int = 0
    access_pool: int = 10_000  # access tokens written to access.txt (a random sample)
    client_id: str = "bench-cli"
    resource: str = "http://127.0.0.1:8000/mcp"
    redirect_uri: str = "http://127.0.0.1:5555/callback"
    scopes: tuple[str, ...] = ("mcp",)
    subjects: int = 1_000  # grants are spread over this many users
    access_ttl: float = 3600.0

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> SeedSpec:
        data = json.loads(text)
        data["scopes"] = tuple(data.get("scopes", ("mcp",)))
        return cls(**data)


def token_value(prefix: str, salt: str, index: int) -> str:
    """A token-shaped value (prefix + 43 base64url characters) unique per salt and index."""
    digest = hashlib.blake2b(f"{salt}:{prefix}:{index}".encode(), digest_size=32).digest()
    return prefix + b64u(digest)


def access_value(spec: SeedSpec, index: int) -> str:
    return token_value(ACCESS_PREFIX, spec.salt, index)


def refresh_value(spec: SeedSpec, index: int) -> str:
    return token_value(REFRESH_PREFIX, spec.salt, index)


def code_value(spec: SeedSpec, index: int) -> str:
    return token_value(CODE_PREFIX, spec.salt, index)


Signer = Callable[[AccessTokenRecord], str]


@dataclass(frozen=True)
class SeededGrant:
    grant: GrantRecord
    access: AccessTokenRecord
    refresh: RefreshTokenRecord
    access_token: str
    refresh_token: str


def grant_of(spec: SeedSpec, index: int, sign: Signer | None = None) -> SeededGrant:
    """The records a code exchange would have written for grant ``index``."""
    user = index % spec.subjects
    grant_id = f"bench-{spec.salt}-g{index}"
    grant = GrantRecord(
        grant_id=grant_id,
        subject=f"user-{user}",
        username=f"user{user}",
        email=f"user{user}@example.com",
        client_id=spec.client_id,
        resource=spec.resource,
        scopes=list(spec.scopes),
        provider="local",
        created_at=spec.now,
        expires_at=spec.now + 90 * DAY,
    )
    access = AccessTokenRecord(
        token_hash="",
        jti=f"bench-{spec.salt}-j{index}",
        grant_id=grant_id,
        client_id=spec.client_id,
        subject=grant.subject,
        username=grant.username,
        email=grant.email,
        resource=spec.resource,
        scopes=list(spec.scopes),
        issued_at=spec.now,
        expires_at=spec.now + spec.access_ttl,
    )
    value = sign(access) if sign is not None else access_value(spec, index)
    access = access.model_copy(update={"token_hash": token_hash(value)})
    refresh = refresh_value(spec, index)
    refresh_record = RefreshTokenRecord(
        token_hash=token_hash(refresh),
        grant_id=grant_id,
        client_id=spec.client_id,
        scopes=list(spec.scopes),
        issued_at=spec.now,
        expires_at=spec.now + 30 * DAY,
    )
    return SeededGrant(grant, access, refresh_record, value, refresh)


def code_of(spec: SeedSpec, index: int) -> tuple[CodeRecord, str]:
    """An unredeemed authorization code (valid for an hour: the whole run)."""
    value = code_value(spec, index)
    user = index % spec.subjects
    record = CodeRecord(
        code_hash=token_hash(value),
        grant_id=f"bench-{spec.salt}-c{index}",
        client_id=spec.client_id,
        redirect_uri=spec.redirect_uri,
        code_challenge=s256(CODE_VERIFIER),
        resource=spec.resource,
        scopes=list(spec.scopes),
        subject=f"user-{user}",
        username=f"user{user}",
        email=f"user{user}@example.com",
        provider="local",
        issued_at=spec.now,
        expires_at=spec.now + 3600,
    )
    return record, value


def access_sample(spec: SeedSpec) -> list[int]:
    """Which grants' access tokens go into access.txt: a shuffled sample across all."""
    rng = random.Random(spec.salt)
    count = min(spec.access_pool, spec.grants)
    return rng.sample(range(spec.grants), count)


# ----------------------------------------------------------------------------- writers
async def _bounded(calls: Iterable[Callable[[], Awaitable[None]]], limit: int) -> None:
    """Run the calls with at most ``limit`` in flight (memory stays flat for 1M calls)."""
    iterator = iter(calls)

    async def worker() -> None:
        for call in iterator:
            await call()

    await asyncio.gather(*(worker() for _ in range(limit)))


def _sqlite_rows(
    grants: Iterable[SeededGrant],
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    g_rows, a_rows, r_rows = [], [], []
    for seeded in grants:
        g, a, r = seeded.grant, seeded.access, seeded.refresh
        g_rows.append((g.grant_id, g.subject, g.client_id, g.expires_at, None, g.model_dump_json()))
        a_rows.append((a.token_hash, a.jti, a.grant_id, a.expires_at, a.model_dump_json()))
        r_rows.append((r.token_hash, r.grant_id, r.expires_at, r.model_dump_json()))
    return g_rows, a_rows, r_rows


def _batches(count: int, size: int) -> Iterator[range]:
    for start in range(0, count, size):
        yield range(start, min(count, start + size))


def seed_sqlite_raw(
    path: Path, spec: SeedSpec, sign: Signer | None, keep: Callable[[int, SeededGrant], None]
) -> None:
    """Batched INSERTs into the schema ``SqliteStorage.open()`` created."""
    conn = sqlite3.connect(path.expanduser(), isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = OFF")  # seeding only; the daemon sets its own
        for batch in _batches(spec.grants, SQLITE_BATCH):
            seeded = []
            for index in batch:
                item = grant_of(spec, index, sign)
                keep(index, item)
                seeded.append(item)
            g_rows, a_rows, r_rows = _sqlite_rows(seeded)
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT INTO grants (grant_id, subject, client_id, expires_at, revoked_at, data)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                g_rows,
            )
            conn.executemany(
                "INSERT INTO access_tokens (token_hash, jti, grant_id, expires_at, data)"
                " VALUES (?, ?, ?, ?, ?)",
                a_rows,
            )
            conn.executemany(
                "INSERT INTO refresh_tokens (token_hash, grant_id, expires_at, data)"
                " VALUES (?, ?, ?, ?)",
                r_rows,
            )
            conn.execute("COMMIT")
        for batch in _batches(spec.codes, SQLITE_BATCH):
            rows = []
            for index in batch:
                code, _ = code_of(spec, index)
                rows.append(
                    (code.code_hash, code.grant_id, code.expires_at, code.model_dump_json())
                )
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT INTO codes (code_hash, grant_id, expires_at, data) VALUES (?, ?, ?, ?)",
                rows,
            )
            conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


async def seed_through_api(
    storage: Storage,
    spec: SeedSpec,
    sign: Signer | None,
    keep: Callable[[int, SeededGrant], None],
    in_flight: int,
) -> None:
    def grant_calls() -> Iterator[Callable[[], Awaitable[None]]]:
        for index in range(spec.grants):
            item = grant_of(spec, index, sign)
            keep(index, item)

            async def call(item: SeededGrant = item) -> None:
                await storage.create_grant(item.grant, item.access, item.refresh)

            yield call

    def code_calls() -> Iterator[Callable[[], Awaitable[None]]]:
        for index in range(spec.codes):
            record, _ = code_of(spec, index)

            async def call(record: CodeRecord = record) -> None:
                await storage.put_code(record)

            yield call

    await _bounded(grant_calls(), in_flight)
    await _bounded(code_calls(), in_flight)


# ----------------------------------------------------------------------------- entry point
async def signer_for(config: Config, storage: Storage) -> Signer | None:
    """The daemon's own JWT signer on this storage (creates the first key), or None."""
    if config.tokens.format != "jwt":
        return None
    material = load_key_material(config)
    manager = SigningKeyManager(config, storage, material.keyring, SystemClock())
    await manager.refresh()
    issuer = config.issuer

    def sign(record: AccessTokenRecord) -> str:
        return manager.sign_access_token(record, issuer)

    return sign


async def verify_sample(storage: Storage, kept: dict[int, SeededGrant]) -> None:
    """Read a few seeded records back through the storage API: a raw write that does not
    match what the backend expects fails here, not halfway through a measurement."""
    for item in list(kept.values())[:5]:
        found = await storage.get_access_token(item.access.token_hash)
        if found is None or found.grant_id != item.grant.grant_id:
            raise RuntimeError("seeded access token does not read back through the storage API")
        refresh = await storage.get_refresh_token(item.refresh.token_hash)
        if refresh is None or refresh.grant_id != item.grant.grant_id:
            raise RuntimeError("seeded refresh token does not read back through the storage API")


def write_pools(spec: SeedSpec, pool_dir: Path, access_tokens: dict[int, str]) -> None:
    pool_dir.mkdir(parents=True, exist_ok=True)
    with (pool_dir / "access.txt").open("w") as out:
        for index in access_sample(spec):
            out.write(access_tokens[index] + "\n")
    with (pool_dir / "refresh.txt").open("w") as out:
        for index in range(spec.grants):
            out.write(refresh_value(spec, index) + "\n")
    with (pool_dir / "codes.txt").open("w") as out:
        for index in range(spec.codes):
            out.write(code_value(spec, index) + "\n")


async def seed(storage: Storage, config: Config, spec: SeedSpec, pool_dir: Path) -> dict[str, Any]:
    """Seed ``storage`` (opened here; the caller closes it) and write the pool files.
    Returns a small report (counts, method, seconds)."""
    started = time.perf_counter()
    await storage.open()
    sign = await signer_for(config, storage)
    wanted = set(access_sample(spec))
    jwt = sign is not None
    access_tokens: dict[int, str] = {}
    kept: dict[int, SeededGrant] = {}

    def keep(index: int, item: SeededGrant) -> None:
        if index in wanted:
            access_tokens[index] = item.access_token
        if len(kept) < 5:
            kept[index] = item

    method = "storage API"
    if isinstance(config.storage, SqliteStorageConfig) and spec.grants + spec.codes > 0:
        method = "raw batched SQL"
        await asyncio.to_thread(seed_sqlite_raw, config.storage.path, spec, sign, keep)
    else:
        in_flight = REDIS_IN_FLIGHT if storage.name == "redis" else 1
        await seed_through_api(storage, spec, sign, keep, in_flight)
    await verify_sample(storage, kept)
    write_pools(spec, pool_dir, access_tokens)
    return {
        "backend": storage.name,
        "grants": spec.grants,
        "codes": spec.codes,
        "format": "jwt" if jwt else "opaque",
        "method": method,
        "seconds": round(time.perf_counter() - started, 2),
    }

"""The memory backend's footprint and its compact representation (issue 10).

100,000 live grants must fit a daemon under 150 MB resident; an empty daemon takes about
80 MB, which leaves ~700 bytes a grant. The footprint is measured with ``tracemalloc``
(deterministic: no clock, no RSS): it counts the bytes asked for, a little less than
pymalloc hands out (it rounds up to 16) and RSS shows, hence the lower bound here.
The rest checks what the compact form must not change: records read back equal and
independent of what callers hold, whichever way a token is kept.
"""

from __future__ import annotations

import gc
import tracemalloc

from bench.seeding import SeedSpec, grant_of
from mcp_oauthd.storage.base import AccessTokenRecord, GrantRecord, RefreshTokenRecord
from mcp_oauthd.storage.memory import MemoryStorage
from mcp_oauthd.testing.storage_conformance import (
    NOW,
    hash_of,
    make_access,
    make_grant,
    make_refresh,
    rotate,
)

#: tracemalloc bytes a bench-shaped grant (grant + access + refresh token) may cost. It
#: measures ~550 today (the old dicts of pydantic records: ~4,450).
GRANT_BUDGET = 640


def _bench_spec() -> SeedSpec:
    # The grants ``python -m bench`` seeds for its RSS figure: 1,000 users, one client,
    # one resource, scopes ["mcp"].
    return SeedSpec(salt="0123456789ab-rss", now=NOW, client_id="bench-cli")


async def _create(storage: MemoryStorage, spec: SeedSpec, indexes: range) -> None:
    for index in indexes:
        seeded = grant_of(spec, index)
        await storage.create_grant(seeded.grant, seeded.access, seeded.refresh)


async def test_a_grant_costs_less_than_640_bytes_in_memory_storage() -> None:
    storage, spec = MemoryStorage(), _bench_spec()
    # Every user's identity is interned by the first 1,000 grants: what follows is the
    # cost of one more grant, which is what 100,000 of them multiply.
    await _create(storage, spec, range(1_000))
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        await _create(storage, spec, range(1_000, 3_000))
        gc.collect()
        per_grant = (tracemalloc.get_traced_memory()[0] - before) / 2_000
    finally:
        tracemalloc.stop()
    assert per_grant < GRANT_BUDGET, f"{per_grant:.0f} bytes a grant"
    seeded = grant_of(spec, 2_999)
    assert await storage.get_access_token(seeded.access.token_hash) == seeded.access
    assert await storage.get_refresh_token(seeded.refresh.token_hash) == seeded.refresh
    assert await storage.get_grant(seeded.grant.grant_id) == seeded.grant


async def test_records_read_back_behave_like_validated_ones() -> None:
    storage = MemoryStorage()
    grant = make_grant(username="alice", email="alice@example.com", scopes=["a", "b"])
    access = make_access(grant, username="alice", email="alice@example.com")
    refresh = make_refresh(grant)
    await storage.create_grant(grant, access, refresh)

    found = await storage.get_access_token(access.token_hash)
    assert isinstance(found, AccessTokenRecord)
    assert found == access
    assert found.model_dump() == access.model_dump()
    assert found.model_dump_json() == access.model_dump_json()
    assert repr(found) == repr(access)
    assert found.model_copy(update={"jti": "other"}).jti == "other"
    assert AccessTokenRecord.model_validate_json(found.model_dump_json()) == access
    read_grant = await storage.get_grant(grant.grant_id)
    assert isinstance(read_grant, GrantRecord)
    assert read_grant.model_dump() == grant.model_dump()
    read_refresh = await storage.get_refresh_token(refresh.token_hash)
    assert isinstance(read_refresh, RefreshTokenRecord)
    assert read_refresh.model_dump() == refresh.model_dump()


async def test_changing_lists_of_records_stored_or_read_does_not_change_the_store() -> None:
    storage = MemoryStorage()
    grant = make_grant(scopes=["a"])
    access, refresh = make_access(grant), make_refresh(grant)
    await storage.create_grant(grant, access, refresh)
    grant.scopes.append("stored-then-changed")
    access.scopes.append("stored-then-changed")
    refresh.scopes.append("stored-then-changed")
    for read in (
        await storage.get_grant(grant.grant_id),
        await storage.get_access_token(access.token_hash),
        await storage.get_refresh_token(refresh.token_hash),
    ):
        assert read is not None
        assert read.scopes == ["a"]
        read.scopes.append("read-then-changed")
    for read in (
        await storage.get_grant(grant.grant_id),
        await storage.get_access_token(access.token_hash),
        await storage.get_refresh_token(refresh.token_hash),
    ):
        assert read is not None
        assert read.scopes == ["a"]


async def test_tokens_unlike_their_grant_read_back_equal_and_die_with_it() -> None:
    storage = MemoryStorage()
    grant = make_grant(scopes=["a", "b"])
    # Narrowed scopes, a non-ASCII jti, another client: not embedded in the grant.
    access = make_access(grant, scopes=["a"], jti="jti-\u00e9")
    refresh = make_refresh(grant, client_id="client-2")
    await storage.create_grant(grant, access, refresh)
    assert await storage.get_access_token(access.token_hash) == access
    assert await storage.get_access_token_by_jti(access.jti) == access
    assert await storage.get_refresh_token(refresh.token_hash) == refresh
    assert await storage.revoke_grant(grant.grant_id, NOW + 1) is True
    assert await storage.get_access_token(access.token_hash) is None
    assert await storage.get_access_token_by_jti(access.jti) is None
    assert await storage.get_refresh_token(refresh.token_hash) is None


async def test_token_hashes_are_matched_exactly_as_written() -> None:
    # Canonical SHA-256 hashes are keyed by their bytes; nothing else may share their key.
    storage = MemoryStorage()
    canonical = hash_of("token")
    written = [canonical, hash_of("other").upper(), " " + hash_of("spaced")[1:], "not-a-sha256"]
    for token_hash in written:
        grant = make_grant()
        access = make_access(grant, token_hash=token_hash, jti=f"jti-{token_hash}")
        await storage.create_grant(grant, access, None)
    assert await storage.get_access_token(canonical.upper()) is None
    assert await storage.get_access_token(written[1].lower()) is None
    for token_hash in written:
        found = await storage.get_access_token(token_hash)
        assert found is not None
        assert found.token_hash == token_hash
        by_jti = await storage.get_access_token_by_jti(f"jti-{token_hash}")
        assert by_jti == found


async def test_a_grant_refreshed_many_times_keeps_every_token_until_revoked() -> None:
    storage = MemoryStorage()
    grant = make_grant()
    first_access, old = make_access(grant), make_refresh(grant)
    await storage.create_grant(grant, first_access, old)
    accesses, refreshes = [first_access], [old]
    for step in range(1, 6):
        result, access, refresh = await rotate(storage, old, grant, now=NOW + step, grace=30)
        assert result.status.value == "rotated"
        accesses.append(access)
        refreshes.append(refresh)
        old = refresh
    for access in accesses:
        assert await storage.get_access_token(access.token_hash) == access
        assert await storage.get_access_token_by_jti(access.jti) == access
    for index, refresh in enumerate(refreshes):
        found = await storage.get_refresh_token(refresh.token_hash)
        assert found is not None
        assert found.rotated_at == (None if index == 5 else NOW + index + 1)
    assert await storage.revoke_grant(grant.grant_id, NOW + 10) is True
    for access in accesses:
        assert await storage.get_access_token(access.token_hash) is None
        assert await storage.get_access_token_by_jti(access.jti) is None
    for refresh in refreshes:
        assert await storage.get_refresh_token(refresh.token_hash) is None


async def test_gc_forgets_what_only_removed_grants_used() -> None:
    storage = MemoryStorage()
    spec = _bench_spec()
    await _create(storage, spec, range(50))
    kept = make_grant(client_id="bench-cli", ttl=400 * 86_400.0)
    await storage.create_grant(kept, make_access(kept, ttl=400 * 86_400.0), None)
    assert await storage.gc(NOW + 200 * 86_400.0) == 50 * 3
    assert await storage.list_grants(client_id="bench-cli") == [kept]
    assert await storage.list_grants() == [kept]
    # Only the surviving grant's identity is still interned (a white-box check: a table
    # that only grew would keep one entry per user and client for the process's life).
    assert len(storage._grant_whos) == 1

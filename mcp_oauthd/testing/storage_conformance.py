"""The storage conformance suite: every backend, built in or plugged in, must pass it.

Use it from a test module of your own::

    import pytest
    from mcp_oauthd.testing.storage_conformance import StorageConformance

    class TestMyStorage(StorageConformance):
        @pytest.fixture
        async def storage(self):
            backend = MyStorage(...)
            await backend.open()
            yield backend  # a fresh, empty store for every test
            await backend.close()

The tests need pytest-asyncio; in its strict mode decorate the fixture with
``pytest_asyncio.fixture``. Time is always a ``now`` float passed in, so nothing here
waits on the wall clock. The concurrency cases use ``asyncio.gather`` from one event
loop; a backend shared between processes should add its own cross-process tests.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from mcp_oauthd.storage.base import (
    AccessTokenRecord,
    ClientKind,
    ClientRecord,
    CodeRecord,
    ConsentRecord,
    ConsumeStatus,
    CountsForGauges,
    GrantRecord,
    GrantRevoked,
    ReadsAccessTokensNow,
    RefreshTokenRecord,
    RotateResult,
    RotateStatus,
    SigningKeyRecord,
    Storage,
)

#: The fake "now" every test starts from.
NOW = 1_800_000_000.0
HOUR = 3600.0
DAY = 86_400.0


# --------------------------------------------------------------------------- factories
def new_id(prefix: str = "") -> str:
    return f"{prefix}{uuid.uuid4().hex}"


def hash_of(value: str) -> str:
    """The storage key of a token or code value: its SHA-256, as the service computes it."""
    return hashlib.sha256(value.encode()).hexdigest()


def make_client(client_id: str | None = None, **overrides: Any) -> ClientRecord:
    fields: dict[str, Any] = {
        "client_id": client_id or new_id("client-"),
        "client_name": "Conformance client",
        "kind": ClientKind.DYNAMIC,
        "redirect_uris": ["http://127.0.0.1:33418/callback"],
        "created_at": NOW,
        "metadata": {"logo_uri": "https://example.com/logo.png"},
    }
    fields.update(overrides)
    return ClientRecord.model_validate(fields)


def make_code(
    grant_id: str | None = None, *, now: float = NOW, ttl: float = 60.0, **overrides: Any
) -> CodeRecord:
    fields: dict[str, Any] = {
        "code_hash": hash_of(new_id("code-")),
        "grant_id": grant_id or new_id("grant-"),
        "client_id": "client-1",
        "redirect_uri": "http://127.0.0.1:33418/callback",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "resource": "https://mcp.example.com/mcp",
        "scopes": ["mcp:tools"],
        "subject": "alice",
        "email": "alice@example.com",
        "provider": "local",
        "issued_at": now,
        "expires_at": now + ttl,
    }
    fields.update(overrides)
    return CodeRecord.model_validate(fields)


def make_grant(
    grant_id: str | None = None,
    *,
    subject: str = "alice",
    client_id: str = "client-1",
    now: float = NOW,
    ttl: float = 30 * DAY,
    **overrides: Any,
) -> GrantRecord:
    fields: dict[str, Any] = {
        "grant_id": grant_id or new_id("grant-"),
        "subject": subject,
        "client_id": client_id,
        "resource": "https://mcp.example.com/mcp",
        "scopes": ["mcp:tools"],
        "provider": "local",
        "created_at": now,
        "expires_at": now + ttl,
        "upstream": "v1.encrypted-upstream-envelope",
        "upstream_expires_at": now + HOUR,
    }
    fields.update(overrides)
    return GrantRecord.model_validate(fields)


def make_access(
    grant: GrantRecord, *, now: float = NOW, ttl: float = HOUR, **overrides: Any
) -> AccessTokenRecord:
    fields: dict[str, Any] = {
        "token_hash": hash_of(new_id("at-")),
        "jti": new_id("jti-"),
        "grant_id": grant.grant_id,
        "client_id": grant.client_id,
        "subject": grant.subject,
        "resource": grant.resource,
        "scopes": list(grant.scopes),
        "issued_at": now,
        "expires_at": now + ttl,
    }
    fields.update(overrides)
    return AccessTokenRecord.model_validate(fields)


def make_refresh(
    grant: GrantRecord, *, now: float = NOW, ttl: float = 30 * DAY, **overrides: Any
) -> RefreshTokenRecord:
    fields: dict[str, Any] = {
        "token_hash": hash_of(new_id("rt-")),
        "grant_id": grant.grant_id,
        "client_id": grant.client_id,
        "scopes": list(grant.scopes),
        "issued_at": now,
        "expires_at": now + ttl,
    }
    fields.update(overrides)
    return RefreshTokenRecord.model_validate(fields)


def make_consent(
    *,
    subject: str = "alice",
    client_id: str = "client-1",
    resource: str = "https://mcp.example.com/mcp",
    now: float = NOW,
    ttl: float = 30 * DAY,
    **overrides: Any,
) -> ConsentRecord:
    fields: dict[str, Any] = {
        "subject": subject,
        "client_id": client_id,
        "resource": resource,
        "scopes": ["mcp:tools"],
        "granted_at": now,
        "expires_at": now + ttl,
    }
    fields.update(overrides)
    return ConsentRecord.model_validate(fields)


def make_signing_key(generation: int = 1, **overrides: Any) -> SigningKeyRecord:
    fields: dict[str, Any] = {
        "kid": new_id("kid-"),
        "alg": "ES256",
        "generation": generation,
        "private_key": "v1.k1.encrypted-private-key-envelope",
        "public_jwk": {"kty": "EC", "crv": "P-256", "x": "eA", "y": "eQ"},
        "created_at": NOW,
        "activates_at": NOW + (generation - 1) * 30 * DAY,
    }
    fields.update(overrides)
    return SigningKeyRecord.model_validate(fields)


async def create_full_grant(
    storage: Storage, grant: GrantRecord | None = None, *, now: float = NOW
) -> tuple[GrantRecord, AccessTokenRecord, RefreshTokenRecord]:
    """Create a grant with an access and a refresh token; return the three records."""
    grant = grant or make_grant(now=now)
    access = make_access(grant, now=now)
    refresh = make_refresh(grant, now=now)
    await storage.create_grant(grant, access, refresh)
    return grant, access, refresh


async def rotate(
    storage: Storage,
    old: RefreshTokenRecord,
    grant: GrantRecord,
    *,
    now: float,
    grace: float,
    successor: str | None = None,
) -> tuple[RotateResult, AccessTokenRecord, RefreshTokenRecord]:
    """Rotate ``old`` with freshly made successor tokens; return the result and them."""
    access = make_access(grant, now=now)
    refresh = make_refresh(grant, now=now)
    result = await storage.rotate_refresh_token(
        old.token_hash, access, refresh, successor or new_id("successor-"), now, grace
    )
    return result, access, refresh


async def assert_no_tokens(
    storage: Storage, access: list[AccessTokenRecord], refresh: list[RefreshTokenRecord]
) -> None:
    for a in access:
        assert await storage.get_access_token(a.token_hash) is None
        assert await storage.get_access_token_by_jti(a.jti) is None
    for r in refresh:
        assert await storage.get_refresh_token(r.token_hash) is None


# --------------------------------------------------------------------------- the suite
class StorageConformance:
    """Subclass it and provide an async ``storage`` fixture yielding an open, empty store."""

    pytestmark = [pytest.mark.asyncio]

    @pytest.fixture
    async def storage(self) -> AsyncIterator[Storage]:
        raise NotImplementedError("a StorageConformance subclass must provide `storage`")
        yield  # type: ignore[unreachable, unused-ignore]  # noqa: PT022  (an async generator)

    # ----------------------------------------------------------------- lifecycle
    async def test_the_backend_is_a_storage_with_a_name_and_answers_ping(
        self, storage: Storage
    ) -> None:
        assert isinstance(storage, Storage)
        assert isinstance(storage.name, str)
        assert storage.name
        await storage.ping()

    # ----------------------------------------------------------------- clients
    async def test_a_stored_client_reads_back_equal(self, storage: Storage) -> None:
        client = make_client(
            secret_hash="sha256:" + "ab" * 32,
            token_endpoint_auth_method="client_secret_basic",
            expires_at=NOW + DAY,
        )
        await storage.put_client(client)
        assert await storage.get_client(client.client_id) == client

    async def test_an_unknown_client_is_none(self, storage: Storage) -> None:
        assert await storage.get_client("no-such-client") is None

    async def test_putting_a_client_again_replaces_it(self, storage: Storage) -> None:
        client = make_client()
        await storage.put_client(client)
        renamed = client.model_copy(update={"client_name": "Renamed"})
        await storage.put_client(renamed)
        assert await storage.get_client(client.client_id) == renamed
        assert len(await storage.list_clients()) == 1

    async def test_list_clients_returns_every_client(self, storage: Storage) -> None:
        clients = [make_client(kind=kind) for kind in ClientKind]
        for client in clients:
            await storage.put_client(client)
        listed = await storage.list_clients()
        assert sorted(listed, key=lambda c: c.client_id) == sorted(
            clients, key=lambda c: c.client_id
        )

    async def test_deleting_a_client_reports_whether_it_existed(self, storage: Storage) -> None:
        client = make_client()
        await storage.put_client(client)
        assert await storage.delete_client(client.client_id) is True
        assert await storage.get_client(client.client_id) is None
        assert await storage.delete_client(client.client_id) is False

    async def test_deleting_a_client_revokes_its_grants_and_only_its_grants(
        self, storage: Storage
    ) -> None:
        doomed, other = make_client(), make_client()
        await storage.put_client(doomed)
        await storage.put_client(other)
        g1, a1, r1 = await create_full_grant(storage, make_grant(client_id=doomed.client_id))
        g2, a2, r2 = await create_full_grant(storage, make_grant(client_id=doomed.client_id))
        g3, a3, r3 = await create_full_grant(storage, make_grant(client_id=other.client_id))

        assert await storage.delete_client(doomed.client_id) is True

        for grant in (g1, g2):
            found = await storage.get_grant(grant.grant_id)
            assert found is None or found.revoked_at is not None
        await assert_no_tokens(storage, [a1, a2], [r1, r2])
        assert await storage.list_grants(client_id=doomed.client_id) == []
        assert await storage.get_access_token(a3.token_hash) == a3
        assert await storage.get_refresh_token(r3.token_hash) == r3
        assert await storage.list_grants(client_id=other.client_id) == [g3]

    async def test_count_clients_by_ip_counts_only_live_clients_from_that_ip(
        self, storage: Storage
    ) -> None:
        ip, other_ip = "192.0.2.7", "2001:db8:1:2::/64"
        for client in (
            make_client(registered_ip=ip),
            make_client(registered_ip=ip, expires_at=NOW + DAY),
            make_client(registered_ip=ip, expires_at=NOW),  # expired at NOW
            make_client(registered_ip=ip, expires_at=NOW - DAY),
            make_client(registered_ip=other_ip),
            make_client(),  # no registered_ip (a static-like record)
        ):
            await storage.put_client(client)
        assert await storage.count_clients_by_ip(ip, NOW) == 2
        assert await storage.count_clients_by_ip(ip, NOW + 2 * DAY) == 1
        assert await storage.count_clients_by_ip(ip, NOW - 2 * DAY) == 4
        assert await storage.count_clients_by_ip(other_ip, NOW) == 1
        assert await storage.count_clients_by_ip("198.51.100.1", NOW) == 0

    async def test_count_clients_by_ip_follows_deletes_replacements_and_gc(
        self, storage: Storage
    ) -> None:
        ip = "192.0.2.8"
        kept = make_client(registered_ip=ip)
        deleted = make_client(registered_ip=ip)
        moved = make_client(registered_ip=ip)
        expiring = make_client(registered_ip=ip, expires_at=NOW + HOUR)
        for client in (kept, deleted, moved, expiring):
            await storage.put_client(client)
        assert await storage.count_clients_by_ip(ip, NOW) == 4

        await storage.delete_client(deleted.client_id)
        await storage.put_client(moved.model_copy(update={"registered_ip": "192.0.2.9"}))
        assert await storage.count_clients_by_ip(ip, NOW) == 2
        assert await storage.count_clients_by_ip("192.0.2.9", NOW) == 1

        # Extending a client's expiry (it was used) keeps it counted.
        await storage.put_client(expiring.model_copy(update={"expires_at": NOW + DAY}))
        assert await storage.count_clients_by_ip(ip, NOW + 2 * HOUR) == 2

        await storage.gc(NOW + 2 * DAY)
        assert await storage.get_client(expiring.client_id) is None
        assert await storage.count_clients_by_ip(ip, NOW) == 1

    # ----------------------------------------------------------------- ephemeral
    async def test_ephemeral_data_reads_back_until_it_expires(self, storage: Storage) -> None:
        data = {"state": "xyz", "nested": {"scopes": ["a", "b"], "n": 3, "ok": True}}
        await storage.put_ephemeral("authorize", "k1", data, NOW + 600)
        assert await storage.get_ephemeral("authorize", "k1", NOW) == data
        assert await storage.get_ephemeral("authorize", "k1", NOW + 599) == data
        assert await storage.get_ephemeral("authorize", "k1", NOW + 600) is None
        assert await storage.get_ephemeral("authorize", "k1", NOW + 601) is None

    async def test_get_ephemeral_does_not_consume(self, storage: Storage) -> None:
        await storage.put_ephemeral("authorize", "k1", {"v": 1}, NOW + 600)
        assert await storage.get_ephemeral("authorize", "k1", NOW) == {"v": 1}
        assert await storage.get_ephemeral("authorize", "k1", NOW) == {"v": 1}
        assert await storage.take_ephemeral("authorize", "k1", NOW) == {"v": 1}

    async def test_take_ephemeral_returns_the_data_exactly_once(self, storage: Storage) -> None:
        await storage.put_ephemeral("login", "k1", {"v": 1}, NOW + 600)
        assert await storage.take_ephemeral("login", "k1", NOW) == {"v": 1}
        assert await storage.take_ephemeral("login", "k1", NOW) is None
        assert await storage.get_ephemeral("login", "k1", NOW) is None

    async def test_taking_expired_ephemeral_state_gives_nothing(self, storage: Storage) -> None:
        await storage.put_ephemeral("login", "k1", {"v": 1}, NOW + 600)
        assert await storage.take_ephemeral("login", "k1", NOW + 600) is None
        assert await storage.take_ephemeral("login", "k1", NOW) is None

    async def test_an_unknown_ephemeral_key_is_none(self, storage: Storage) -> None:
        assert await storage.get_ephemeral("login", "nope", NOW) is None
        assert await storage.take_ephemeral("login", "nope", NOW) is None

    async def test_ephemeral_kinds_never_share_keys(self, storage: Storage) -> None:
        await storage.put_ephemeral("authorize", "same", {"kind": "authorize"}, NOW + 600)
        await storage.put_ephemeral("upstream", "same", {"kind": "upstream"}, NOW + 600)
        assert await storage.take_ephemeral("upstream", "same", NOW) == {"kind": "upstream"}
        assert await storage.get_ephemeral("authorize", "same", NOW) == {"kind": "authorize"}
        assert await storage.get_ephemeral("other", "same", NOW) is None

    async def test_putting_ephemeral_state_again_replaces_it(self, storage: Storage) -> None:
        await storage.put_ephemeral("login", "k1", {"v": 1}, NOW + 10)
        await storage.put_ephemeral("login", "k1", {"v": 2}, NOW + 600)
        assert await storage.get_ephemeral("login", "k1", NOW + 300) == {"v": 2}

    async def test_ephemeral_data_is_a_copy_not_the_callers_object(self, storage: Storage) -> None:
        data: dict[str, Any] = {"list": [1]}
        await storage.put_ephemeral("login", "k1", data, NOW + 600)
        data["list"].append(2)
        read = await storage.get_ephemeral("login", "k1", NOW)
        assert read == {"list": [1]}
        assert read is not None
        read["list"].append(3)
        assert await storage.get_ephemeral("login", "k1", NOW) == {"list": [1]}

    # ----------------------------------------------------------------- codes
    async def test_the_first_consume_of_a_code_is_ok_with_its_record(
        self, storage: Storage
    ) -> None:
        code = make_code()
        await storage.put_code(code)
        result = await storage.consume_code(code.code_hash, NOW + 5)
        assert result.status is ConsumeStatus.OK
        assert result.code is not None
        assert result.code.consumed_at == NOW + 5
        assert result.code.model_copy(update={"consumed_at": None}) == code

    async def test_a_second_consume_of_a_code_is_reused_and_names_its_grant(
        self, storage: Storage
    ) -> None:
        code = make_code()
        await storage.put_code(code)
        await storage.consume_code(code.code_hash, NOW + 5)
        again = await storage.consume_code(code.code_hash, NOW + 9)
        assert again.status is ConsumeStatus.REUSED
        assert again.code is not None
        assert again.code.grant_id == code.grant_id
        assert again.code.consumed_at == NOW + 5
        third = await storage.consume_code(code.code_hash, NOW + 10)
        assert third.status is ConsumeStatus.REUSED

    async def test_consuming_an_unknown_code_is_missing(self, storage: Storage) -> None:
        result = await storage.consume_code(hash_of("never-issued"), NOW)
        assert result.status is ConsumeStatus.MISSING
        assert result.code is None

    async def test_an_expired_code_is_consumed_as_found_for_the_caller_to_check(
        self, storage: Storage
    ) -> None:
        code = make_code(ttl=60)
        await storage.put_code(code)
        result = await storage.consume_code(code.code_hash, NOW + 3600)
        assert result.status is ConsumeStatus.OK
        assert result.code is not None
        assert result.code.expires_at == NOW + 60

    # ----------------------------------------------------------------- grants
    async def test_create_grant_stores_the_grant_and_its_first_tokens(
        self, storage: Storage
    ) -> None:
        grant, access, refresh = await create_full_grant(storage)
        assert await storage.get_grant(grant.grant_id) == grant
        assert await storage.get_access_token(access.token_hash) == access
        assert await storage.get_refresh_token(refresh.token_hash) == refresh

    async def test_create_grant_without_a_refresh_token(self, storage: Storage) -> None:
        grant = make_grant()
        access = make_access(grant)
        await storage.create_grant(grant, access, None)
        assert await storage.get_grant(grant.grant_id) == grant
        assert await storage.get_access_token(access.token_hash) == access

    async def test_unknown_grants_and_tokens_are_none(self, storage: Storage) -> None:
        assert await storage.get_grant("no-such-grant") is None
        assert await storage.get_access_token(hash_of("x")) is None
        assert await storage.get_access_token_by_jti("no-such-jti") is None
        assert await storage.get_refresh_token(hash_of("x")) is None

    async def test_create_grant_after_its_id_was_revoked_raises_grant_revoked(
        self, storage: Storage
    ) -> None:
        grant = make_grant()
        assert await storage.revoke_grant(grant.grant_id, NOW) is False
        access, refresh = make_access(grant), make_refresh(grant)
        with pytest.raises(GrantRevoked):
            await storage.create_grant(grant, access, refresh)
        found = await storage.get_grant(grant.grant_id)
        assert found is None or found.revoked_at is not None
        await assert_no_tokens(storage, [access], [refresh])
        assert await storage.list_grants() == []

    async def test_creating_a_revoked_grant_again_raises_grant_revoked(
        self, storage: Storage
    ) -> None:
        grant, _, _ = await create_full_grant(storage)
        await storage.revoke_grant(grant.grant_id, NOW + 1)
        access = make_access(grant)
        with pytest.raises(GrantRevoked):
            await storage.create_grant(grant, access, None)
        assert await storage.get_access_token(access.token_hash) is None

    async def test_revoke_grant_deletes_every_token_of_that_grant_only(
        self, storage: Storage
    ) -> None:
        grant, a1, r1 = await create_full_grant(storage)
        _, a2, r2 = await rotate(storage, r1, grant, now=NOW + 10, grace=0)
        other, a3, r3 = await create_full_grant(storage)

        assert await storage.revoke_grant(grant.grant_id, NOW + 20) is True

        revoked = await storage.get_grant(grant.grant_id)
        assert revoked is not None
        assert revoked.revoked_at == NOW + 20
        await assert_no_tokens(storage, [a1, a2], [r1, r2])
        assert await storage.get_access_token(a3.token_hash) == a3
        assert await storage.get_refresh_token(r3.token_hash) == r3
        assert await storage.get_grant(other.grant_id) == other

    async def test_revoke_grant_is_true_only_when_a_live_grant_dies(self, storage: Storage) -> None:
        grant, _, _ = await create_full_grant(storage)
        assert await storage.revoke_grant(grant.grant_id, NOW) is True
        assert await storage.revoke_grant(grant.grant_id, NOW + 1) is False
        assert await storage.revoke_grant("never-created", NOW) is False
        found = await storage.get_grant(grant.grant_id)
        assert found is not None
        assert found.revoked_at == NOW

    async def test_list_grants_filters_by_subject_and_client_and_skips_revoked(
        self, storage: Storage
    ) -> None:
        alice_1, _, _ = await create_full_grant(
            storage, make_grant(subject="alice", client_id="c1")
        )
        alice_2, _, _ = await create_full_grant(
            storage, make_grant(subject="alice", client_id="c2")
        )
        bob_1, _, _ = await create_full_grant(storage, make_grant(subject="bob", client_id="c1"))
        dead, _, _ = await create_full_grant(storage, make_grant(subject="alice", client_id="c1"))
        await storage.revoke_grant(dead.grant_id, NOW)

        def ids(grants: list[GrantRecord]) -> set[str]:
            return {g.grant_id for g in grants}

        assert ids(await storage.list_grants()) == ids([alice_1, alice_2, bob_1])
        assert ids(await storage.list_grants(subject="alice")) == ids([alice_1, alice_2])
        assert ids(await storage.list_grants(client_id="c1")) == ids([alice_1, bob_1])
        assert ids(await storage.list_grants(subject="alice", client_id="c1")) == ids([alice_1])
        assert await storage.list_grants(subject="carol") == []
        assert await storage.list_grants(subject="alice", client_id="c2") == [alice_2]

    async def test_the_gauge_counts_equal_what_the_listings_give(self, storage: Storage) -> None:
        """``CountsForGauges`` is optional; where a backend offers it, the metrics gauges
        use it instead of the listings, so it must count exactly what they list."""
        if not isinstance(storage, CountsForGauges):
            pytest.skip(f"{storage.name} counts for the gauges from its listings")
        assert await storage.count_live_grants(NOW) == 0
        assert not any((await storage.count_clients_by_kind()).values())
        for grant in (make_grant(), make_grant(subject="bob"), make_grant(ttl=HOUR)):
            await create_full_grant(storage, grant)
        dead, _, _ = await create_full_grant(storage)
        await storage.revoke_grant(dead.grant_id, NOW)
        for kind in (ClientKind.DYNAMIC, ClientKind.DYNAMIC, ClientKind.CIMD, ClientKind.STATIC):
            await storage.put_client(make_client(kind=kind))

        for now in (NOW, NOW + HOUR - 1, NOW + HOUR, NOW + 31 * DAY):
            listed = [g for g in await storage.list_grants() if g.expires_at > now]
            assert await storage.count_live_grants(now) == len(listed), now
        assert await storage.count_live_grants(NOW + HOUR) == 2
        listed_kinds = Counter(c.kind for c in await storage.list_clients())
        counted = {k: n for k, n in (await storage.count_clients_by_kind()).items() if n}
        assert (
            counted
            == dict(listed_kinds)
            == {
                ClientKind.DYNAMIC: 2,
                ClientKind.CIMD: 1,
                ClientKind.STATIC: 1,
            }
        )

    async def test_update_grant_upstream_replaces_the_upstream_token_set(
        self, storage: Storage
    ) -> None:
        grant, _, _ = await create_full_grant(storage)
        assert await storage.update_grant_upstream(grant.grant_id, "v1.new", NOW + 7200) is True
        found = await storage.get_grant(grant.grant_id)
        assert found is not None
        assert (found.upstream, found.upstream_expires_at) == ("v1.new", NOW + 7200)
        assert await storage.update_grant_upstream(grant.grant_id, None, None) is True
        found = await storage.get_grant(grant.grant_id)
        assert found is not None
        assert (found.upstream, found.upstream_expires_at) == (None, None)

    async def test_update_grant_upstream_is_false_for_a_revoked_or_unknown_grant(
        self, storage: Storage
    ) -> None:
        grant, _, _ = await create_full_grant(storage)
        await storage.revoke_grant(grant.grant_id, NOW)
        assert await storage.update_grant_upstream(grant.grant_id, "v1.x", NOW) is False
        assert await storage.update_grant_upstream("never-created", "v1.x", NOW) is False
        found = await storage.get_grant(grant.grant_id)
        assert found is not None
        assert found.upstream == grant.upstream

    # ----------------------------------------------------------------- access tokens
    async def test_an_access_token_is_found_by_hash_and_by_jti(self, storage: Storage) -> None:
        _, access, _ = await create_full_grant(storage)
        assert await storage.get_access_token(access.token_hash) == access
        assert await storage.get_access_token_by_jti(access.jti) == access

    async def test_delete_access_token_reports_whether_it_existed(self, storage: Storage) -> None:
        grant, access, refresh = await create_full_grant(storage)
        assert await storage.delete_access_token(access.token_hash) is True
        assert await storage.get_access_token(access.token_hash) is None
        assert await storage.get_access_token_by_jti(access.jti) is None
        assert await storage.delete_access_token(access.token_hash) is False
        assert await storage.get_refresh_token(refresh.token_hash) == refresh
        assert await storage.get_grant(grant.grant_id) == grant

    async def test_the_synchronous_access_lookup_answers_exactly_as_the_async_one(
        self, storage: Storage
    ) -> None:
        """``ReadsAccessTokensNow`` is optional; where a backend offers it, introspection
        uses it, so it must follow every change the async lookup follows."""
        if not isinstance(storage, ReadsAccessTokensNow):
            pytest.skip(f"{storage.name} has no synchronous access lookup")
        grant, access, refresh = await create_full_grant(storage)
        assert storage.get_access_token_now(access.token_hash) == access
        assert storage.get_access_token_now("0" * 64) is None
        _, rotated_access, _ = await rotate(storage, refresh, grant, now=NOW + 1, grace=0)
        assert storage.get_access_token_now(rotated_access.token_hash) == rotated_access
        assert await storage.delete_access_token(access.token_hash) is True
        assert storage.get_access_token_now(access.token_hash) is None
        await storage.revoke_grant(grant.grant_id, NOW + 2)
        assert storage.get_access_token_now(rotated_access.token_hash) is None
        assert await storage.get_access_token(rotated_access.token_hash) is None

    # ----------------------------------------------------------------- refresh rotation
    async def test_rotating_a_live_refresh_token_stores_the_new_tokens(
        self, storage: Storage
    ) -> None:
        grant, _, old = await create_full_grant(storage)
        result, access, refresh = await rotate(
            storage, old, grant, now=NOW + 100, grace=30, successor="enc-successor"
        )
        assert result.status is RotateStatus.ROTATED
        assert result.grant_id == grant.grant_id
        assert await storage.get_access_token(access.token_hash) == access
        assert await storage.get_refresh_token(refresh.token_hash) == refresh
        rotated = await storage.get_refresh_token(old.token_hash)
        assert rotated is not None
        assert rotated.rotated_at == NOW + 100
        assert rotated.successor == "enc-successor"

    async def test_a_replay_within_the_grace_window_returns_the_successor_only(
        self, storage: Storage
    ) -> None:
        grant, _, old = await create_full_grant(storage)
        await rotate(storage, old, grant, now=NOW + 100, grace=30, successor="enc-successor")
        for delay in (0, 10, 30):
            result, access, refresh = await rotate(
                storage, old, grant, now=NOW + 100 + delay, grace=30
            )
            assert result.status is RotateStatus.GRACE
            assert result.successor == "enc-successor"
            assert result.grant_id == grant.grant_id
            await assert_no_tokens(storage, [access], [refresh])
        found = await storage.get_grant(grant.grant_id)
        assert found is not None
        assert found.revoked_at is None

    async def test_a_replay_after_the_grace_window_revokes_the_grant(
        self, storage: Storage
    ) -> None:
        grant, a1, old = await create_full_grant(storage)
        _, a2, r2 = await rotate(storage, old, grant, now=NOW + 100, grace=30)
        result, a3, r3 = await rotate(storage, old, grant, now=NOW + 131, grace=30)
        assert result.status is RotateStatus.REUSED
        assert result.grant_id == grant.grant_id
        found = await storage.get_grant(grant.grant_id)
        assert found is not None
        assert found.revoked_at == NOW + 131
        await assert_no_tokens(storage, [a1, a2, a3], [old, r2, r3])
        assert await storage.list_grants() == []

    async def test_with_zero_grace_any_replay_is_reuse(self, storage: Storage) -> None:
        grant, _, old = await create_full_grant(storage)
        await rotate(storage, old, grant, now=NOW + 100, grace=0)
        result, _, _ = await rotate(storage, old, grant, now=NOW + 100, grace=0)
        assert result.status is RotateStatus.REUSED
        found = await storage.get_grant(grant.grant_id)
        assert found is not None
        assert found.revoked_at is not None

    async def test_the_successor_rotates_in_turn(self, storage: Storage) -> None:
        grant, _, old = await create_full_grant(storage)
        _, _, second = await rotate(storage, old, grant, now=NOW + 100, grace=30)
        result, _, third = await rotate(storage, second, grant, now=NOW + 200, grace=30)
        assert result.status is RotateStatus.ROTATED
        assert await storage.get_refresh_token(third.token_hash) == third

    async def test_rotating_an_unknown_refresh_token_is_missing(self, storage: Storage) -> None:
        grant, _, _ = await create_full_grant(storage)
        ghost = make_refresh(grant)
        result, access, refresh = await rotate(storage, ghost, grant, now=NOW, grace=30)
        assert result.status is RotateStatus.MISSING
        await assert_no_tokens(storage, [access], [refresh])

    async def test_rotating_a_token_of_a_revoked_grant_is_missing(self, storage: Storage) -> None:
        grant, _, old = await create_full_grant(storage)
        await storage.revoke_grant(grant.grant_id, NOW + 1)
        result, access, refresh = await rotate(storage, old, grant, now=NOW + 2, grace=30)
        assert result.status is RotateStatus.MISSING
        await assert_no_tokens(storage, [access], [refresh])

    # ----------------------------------------------------------------- consent
    async def test_a_consent_reads_back_by_subject_client_and_resource(
        self, storage: Storage
    ) -> None:
        consent = make_consent()
        await storage.put_consent(consent)
        assert await storage.get_consent("alice", "client-1", consent.resource) == consent
        assert await storage.get_consent("bob", "client-1", consent.resource) is None
        assert await storage.get_consent("alice", "client-2", consent.resource) is None
        assert await storage.get_consent("alice", "client-1", "https://other.example") is None

    async def test_putting_a_consent_again_replaces_it(self, storage: Storage) -> None:
        await storage.put_consent(make_consent(scopes=["a"]))
        newer = make_consent(scopes=["a", "b"], now=NOW + 50)
        await storage.put_consent(newer)
        assert await storage.get_consent("alice", "client-1", newer.resource) == newer

    async def test_consents_for_two_resources_are_kept_apart(self, storage: Storage) -> None:
        one = make_consent(resource="https://one.example/mcp", scopes=["x"])
        two = make_consent(resource="https://two.example/mcp", scopes=["y"])
        await storage.put_consent(one)
        await storage.put_consent(two)
        assert await storage.get_consent("alice", "client-1", one.resource) == one
        assert await storage.get_consent("alice", "client-1", two.resource) == two

    # ----------------------------------------------------------------- signing keys
    async def test_signing_keys_read_back_equal_lowest_generation_first(
        self, storage: Storage
    ) -> None:
        assert await storage.list_signing_keys() == []
        third, first, second = make_signing_key(3), make_signing_key(1), make_signing_key(2)
        for key in (third, first, second):
            assert await storage.add_signing_key(key) is True
        assert await storage.list_signing_keys() == [first, second, third]

    async def test_adding_a_signing_key_with_a_taken_kid_or_generation_is_refused(
        self, storage: Storage
    ) -> None:
        original = make_signing_key(1)
        assert await storage.add_signing_key(original)
        same_kid = make_signing_key(2, kid=original.kid)
        same_generation = make_signing_key(1, alg="EdDSA")
        assert await storage.add_signing_key(same_kid) is False
        assert await storage.add_signing_key(same_generation) is False
        assert await storage.list_signing_keys() == [original]

    async def test_deleting_a_signing_key_frees_its_generation(self, storage: Storage) -> None:
        old, kept = make_signing_key(1), make_signing_key(2)
        await storage.add_signing_key(old)
        await storage.add_signing_key(kept)
        assert await storage.delete_signing_key(old.kid) is True
        assert await storage.delete_signing_key(old.kid) is False
        assert await storage.list_signing_keys() == [kept]
        replacement = make_signing_key(1)
        assert await storage.add_signing_key(replacement)
        assert await storage.list_signing_keys() == [replacement, kept]

    async def test_gc_leaves_signing_keys_alone(self, storage: Storage) -> None:
        key = make_signing_key(1, activates_at=NOW - 400 * DAY, created_at=NOW - 400 * DAY)
        await storage.add_signing_key(key)
        await storage.gc(NOW + 400 * DAY)
        assert await storage.list_signing_keys() == [key]

    # ----------------------------------------------------------------- gc
    async def test_gc_of_an_empty_store_removes_nothing(self, storage: Storage) -> None:
        assert await storage.gc(NOW) == 0

    async def test_gc_removes_what_expired_and_keeps_what_lives(self, storage: Storage) -> None:
        later = NOW + 1000
        # Expired by ``later``.
        old_code = make_code(ttl=60)
        old_grant, old_access, old_refresh = await create_full_grant(storage, make_grant(ttl=500))
        await storage.put_code(old_code)
        await storage.put_ephemeral("login", "old", {"v": 0}, NOW + 10)
        old_consent = make_consent(client_id="c-old", ttl=10)
        await storage.put_consent(old_consent)
        # Alive at ``later``.
        live_code = make_code(ttl=5000)
        live_grant = make_grant(ttl=30 * DAY)
        short_access = make_access(live_grant, ttl=60)  # expired token of a live grant
        live_refresh = make_refresh(live_grant)
        await storage.create_grant(live_grant, short_access, live_refresh)
        rotated, live_access, _ = await rotate(storage, live_refresh, live_grant, now=NOW, grace=0)
        assert rotated.status is RotateStatus.ROTATED
        await storage.put_code(live_code)
        await storage.put_ephemeral("login", "live", {"v": 1}, NOW + 5000)
        live_consent = make_consent(client_id="c-live", ttl=5000)
        await storage.put_consent(live_consent)
        live_client = make_client(expires_at=None)
        await storage.put_client(live_client)

        removed = await storage.gc(later)
        assert removed > 0

        consumed = await storage.consume_code(old_code.code_hash, later)
        assert consumed.status is ConsumeStatus.MISSING
        assert await storage.get_grant(old_grant.grant_id) is None
        await assert_no_tokens(storage, [old_access, short_access], [old_refresh])
        assert await storage.get_ephemeral("login", "old", NOW) is None
        assert await storage.get_consent("alice", "c-old", old_consent.resource) is None

        kept = await storage.consume_code(live_code.code_hash, later)
        assert kept.status is ConsumeStatus.OK
        assert await storage.get_grant(live_grant.grant_id) == live_grant
        assert await storage.get_refresh_token(live_refresh.token_hash) is not None
        assert await storage.get_access_token(live_access.token_hash) == live_access
        assert await storage.get_ephemeral("login", "live", later) == {"v": 1}
        assert await storage.get_consent("alice", "c-live", live_consent.resource) == live_consent
        assert await storage.get_client(live_client.client_id) == live_client

        assert await storage.gc(later) == 0

    async def test_gc_removes_a_client_past_its_expiry_and_revokes_its_grants(
        self, storage: Storage
    ) -> None:
        client = make_client(expires_at=NOW + 100)
        await storage.put_client(client)
        _, access, refresh = await create_full_grant(
            storage, make_grant(client_id=client.client_id)
        )
        assert await storage.gc(NOW + 99) == 0
        assert await storage.gc(NOW + 100) > 0
        assert await storage.get_client(client.client_id) is None
        await assert_no_tokens(storage, [access], [refresh])
        assert await storage.list_grants(client_id=client.client_id) == []

    async def test_a_revocation_tombstone_survives_a_gc_soon_after(self, storage: Storage) -> None:
        grant = make_grant()
        await storage.revoke_grant(grant.grant_id, NOW)
        await storage.gc(NOW + 600)
        with pytest.raises(GrantRevoked):
            await storage.create_grant(grant, make_access(grant), None)

    # ----------------------------------------------------------------- concurrency
    async def test_fifty_concurrent_consumes_of_one_code_have_exactly_one_winner(
        self, storage: Storage
    ) -> None:
        code = make_code()
        await storage.put_code(code)
        results = await asyncio.gather(
            *(storage.consume_code(code.code_hash, NOW + 1) for _ in range(50))
        )
        statuses = [r.status for r in results]
        assert statuses.count(ConsumeStatus.OK) == 1
        assert statuses.count(ConsumeStatus.REUSED) == 49
        assert all(r.code is not None and r.code.grant_id == code.grant_id for r in results)

    async def test_twenty_concurrent_takes_of_one_entry_have_exactly_one_winner(
        self, storage: Storage
    ) -> None:
        await storage.put_ephemeral("authorize", "k", {"v": "payload"}, NOW + 600)
        results = await asyncio.gather(
            *(storage.take_ephemeral("authorize", "k", NOW) for _ in range(20))
        )
        assert [r for r in results if r is not None] == [{"v": "payload"}]

    async def test_twenty_concurrent_rotations_with_grace_rotate_once_and_share_the_successor(
        self, storage: Storage
    ) -> None:
        grant, _, old = await create_full_grant(storage)
        outcomes = await asyncio.gather(
            *(
                rotate(storage, old, grant, now=NOW + 100, grace=30, successor=f"successor-{i}")
                for i in range(20)
            )
        )
        winners = [o for o in outcomes if o[0].status is RotateStatus.ROTATED]
        assert len(winners) == 1
        _, win_access, win_refresh = winners[0]
        winner_successor = next(
            f"successor-{i}" for i, o in enumerate(outcomes) if o[0].status is RotateStatus.ROTATED
        )
        losers = [o for o in outcomes if o[0].status is not RotateStatus.ROTATED]
        assert all(o[0].status is RotateStatus.GRACE for o in losers)
        assert all(o[0].successor == winner_successor for o in losers)
        assert await storage.get_access_token(win_access.token_hash) == win_access
        assert await storage.get_refresh_token(win_refresh.token_hash) == win_refresh
        await assert_no_tokens(storage, [o[1] for o in losers], [o[2] for o in losers])

    async def test_twenty_concurrent_rotations_without_grace_rotate_once_and_revoke_the_grant(
        self, storage: Storage
    ) -> None:
        grant, first_access, old = await create_full_grant(storage)
        outcomes = await asyncio.gather(
            *(rotate(storage, old, grant, now=NOW + 100, grace=0) for _ in range(20))
        )
        statuses = [o[0].status for o in outcomes]
        assert statuses.count(RotateStatus.ROTATED) == 1
        # The first replay revokes the grant; replays after it find nothing left.
        assert statuses.count(RotateStatus.REUSED) >= 1
        assert RotateStatus.GRACE not in statuses
        found = await storage.get_grant(grant.grant_id)
        assert found is not None
        assert found.revoked_at is not None
        await assert_no_tokens(
            storage, [first_access, *(o[1] for o in outcomes)], [old, *(o[2] for o in outcomes)]
        )

    async def test_twenty_concurrent_adds_of_one_signing_key_generation_have_one_winner(
        self, storage: Storage
    ) -> None:
        candidates = [make_signing_key(2) for _ in range(20)]
        results = await asyncio.gather(*(storage.add_signing_key(k) for k in candidates))
        assert results.count(True) == 1
        winner = candidates[results.index(True)]
        assert await storage.list_signing_keys() == [winner]

    async def test_concurrent_revoke_and_create_of_one_grant_leave_no_live_token(
        self, storage: Storage
    ) -> None:
        for revoke_first in (True, False, True, False):
            grant = make_grant()
            access, refresh = make_access(grant), make_refresh(grant)
            create = storage.create_grant(grant, access, refresh)
            revoke = storage.revoke_grant(grant.grant_id, NOW)
            ops = (revoke, create) if revoke_first else (create, revoke)
            results = await asyncio.gather(*ops, return_exceptions=True)
            for outcome in results:
                assert outcome is None or isinstance(outcome, bool | GrantRevoked), outcome
            found = await storage.get_grant(grant.grant_id)
            assert found is None or found.revoked_at is not None
            await assert_no_tokens(storage, [access], [refresh])
            assert grant.grant_id not in {g.grant_id for g in await storage.list_grants()}

    async def test_concurrent_rotation_and_revocation_leave_no_live_token(
        self, storage: Storage
    ) -> None:
        grant, access, old = await create_full_grant(storage)
        rotation = rotate(storage, old, grant, now=NOW + 5, grace=30)
        results = await asyncio.gather(
            rotation, storage.revoke_grant(grant.grant_id, NOW + 5), return_exceptions=True
        )
        assert not any(isinstance(r, BaseException) for r in results), results
        outcome = results[0]
        assert isinstance(outcome, tuple)
        _, new_access, new_refresh = outcome
        await assert_no_tokens(storage, [access, new_access], [old, new_refresh])

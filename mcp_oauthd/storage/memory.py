"""The in-process storage backend: for tests and throwaway demos.

Everything lives in plain dicts, one per record kind, keyed by hash. Atomicity comes from
asyncio itself: no method body contains an ``await``, so each domain operation runs to
completion before any other coroutine is scheduled. State is lost when the process exits
and is not shared between worker processes.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from mcp_oauthd.config.models import MemoryStorageConfig
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
)

#: How long a tombstone for a never-created grant id is kept (see ``revoke_grant``).
DEFAULT_TOMBSTONE_TTL = 86_400.0


def _expired(expires_at: float | None, now: float) -> bool:
    return expires_at is not None and expires_at <= now


def _copy_data(data: dict[str, Any]) -> dict[str, Any]:
    """A JSON round trip: no aliasing with the caller, and the same rules as the other
    backends (data that is not JSON-serialisable is refused here too)."""
    try:
        copied = json.loads(json.dumps(data))
    except (TypeError, ValueError):
        raise StorageError("ephemeral data must be JSON-serialisable") from None
    if not isinstance(copied, dict):  # pragma: no cover - json round trip of a dict
        raise StorageError("ephemeral data must be a JSON object")
    return copied


class MemoryStorage:
    """A ``Storage`` held in the memory of one process."""

    name = "memory"

    def __init__(self, *, tombstone_ttl: float = DEFAULT_TOMBSTONE_TTL) -> None:
        self._tombstone_ttl = tombstone_ttl
        self._clients: dict[str, ClientRecord] = {}
        self._codes: dict[str, CodeRecord] = {}
        self._grants: dict[str, GrantRecord] = {}
        self._access: dict[str, AccessTokenRecord] = {}
        self._refresh: dict[str, RefreshTokenRecord] = {}
        self._consents: dict[tuple[str, str, str], ConsentRecord] = {}
        self._ephemeral: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}
        # grant id -> expiry of the tombstone, for ids revoked before they were created.
        self._tombstones: dict[str, float] = {}
        # Secondary indexes, kept in step with the dicts above.
        self._jti: dict[str, str] = {}
        self._access_by_grant: defaultdict[str, set[str]] = defaultdict(set)
        self._refresh_by_grant: defaultdict[str, set[str]] = defaultdict(set)
        self._grants_by_client: defaultdict[str, set[str]] = defaultdict(set)
        self._clients_by_ip: defaultdict[str, set[str]] = defaultdict(set)
        self._signing_keys: dict[str, SigningKeyRecord] = {}

    # ----------------------------------------------------------------- lifecycle
    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    # ----------------------------------------------------------------- clients
    async def put_client(self, client: ClientRecord) -> None:
        self._unindex_client(self._clients.get(client.client_id))
        self._clients[client.client_id] = client.model_copy(deep=True)
        if client.registered_ip is not None:
            self._clients_by_ip[client.registered_ip].add(client.client_id)

    def _unindex_client(self, client: ClientRecord | None) -> None:
        if client is None or client.registered_ip is None:
            return
        ids = self._clients_by_ip.get(client.registered_ip)
        if ids is not None:
            ids.discard(client.client_id)
            if not ids:
                del self._clients_by_ip[client.registered_ip]

    async def get_client(self, client_id: str) -> ClientRecord | None:
        return self._clients.get(client_id)

    async def delete_client(self, client_id: str) -> bool:
        client = self._clients.pop(client_id, None)
        self._unindex_client(client)
        self._revoke_client_grants(client_id, now=None)
        return client is not None

    async def count_clients_by_ip(self, ip: str, now: float) -> int:
        return sum(
            1
            for client_id in self._clients_by_ip.get(ip, ())
            if not _expired(self._clients[client_id].expires_at, now)
        )

    async def list_clients(self) -> list[ClientRecord]:
        return sorted(self._clients.values(), key=lambda c: c.client_id)

    def _revoke_client_grants(self, client_id: str, now: float | None) -> int:
        """Revoke every live grant of a client; return how many tokens went with them."""
        removed = 0
        for grant_id in list(self._grants_by_client.get(client_id, ())):
            grant = self._grants[grant_id]
            if grant.revoked_at is not None:
                continue
            # ``delete_client`` is not given the time: the grant's creation is a lower bound.
            revoked_at = now if now is not None else grant.created_at
            removed += self._drop_tokens_of(grant_id)
            self._revoke(grant_id, revoked_at)
        return removed

    # ----------------------------------------------------------------- ephemeral
    async def put_ephemeral(
        self, kind: str, key: str, data: dict[str, Any], expires_at: float
    ) -> None:
        self._ephemeral[(kind, key)] = (expires_at, _copy_data(data))

    async def get_ephemeral(self, kind: str, key: str, now: float) -> dict[str, Any] | None:
        entry = self._ephemeral.get((kind, key))
        if entry is None or _expired(entry[0], now):
            return None
        return _copy_data(entry[1])

    async def take_ephemeral(self, kind: str, key: str, now: float) -> dict[str, Any] | None:
        entry = self._ephemeral.pop((kind, key), None)
        if entry is None or _expired(entry[0], now):
            return None
        return entry[1]

    # ----------------------------------------------------------------- codes
    async def put_code(self, code: CodeRecord) -> None:
        self._codes[code.code_hash] = code.model_copy(deep=True)

    async def consume_code(self, code_hash: str, now: float) -> ConsumeResult:
        code = self._codes.get(code_hash)
        if code is None:
            return ConsumeResult(status=ConsumeStatus.MISSING)
        if code.consumed_at is not None:
            return ConsumeResult(status=ConsumeStatus.REUSED, code=code)
        code = code.model_copy(update={"consumed_at": now})
        self._codes[code_hash] = code
        return ConsumeResult(status=ConsumeStatus.OK, code=code)

    # ----------------------------------------------------------------- grants and tokens
    async def create_grant(
        self,
        grant: GrantRecord,
        access: AccessTokenRecord,
        refresh: RefreshTokenRecord | None,
    ) -> None:
        existing = self._grants.get(grant.grant_id)
        if grant.grant_id in self._tombstones or (
            existing is not None and existing.revoked_at is not None
        ):
            raise GrantRevoked("the grant was revoked before it was created")
        if existing is not None:
            raise StorageError("a grant with this id already exists")
        self._grants[grant.grant_id] = grant.model_copy(deep=True)
        self._grants_by_client[grant.client_id].add(grant.grant_id)
        self._store_access(access)
        if refresh is not None:
            self._store_refresh(refresh)

    def _store_access(self, access: AccessTokenRecord) -> None:
        old = self._access.get(access.token_hash)
        if old is not None:
            self._drop_access(old)
        self._access[access.token_hash] = access.model_copy(deep=True)
        self._jti[access.jti] = access.token_hash
        self._access_by_grant[access.grant_id].add(access.token_hash)

    def _store_refresh(self, refresh: RefreshTokenRecord) -> None:
        old = self._refresh.get(refresh.token_hash)
        if old is not None:
            self._drop_refresh(old)
        self._refresh[refresh.token_hash] = refresh.model_copy(deep=True)
        self._refresh_by_grant[refresh.grant_id].add(refresh.token_hash)

    def _drop_access(self, access: AccessTokenRecord) -> None:
        self._access.pop(access.token_hash, None)
        if self._jti.get(access.jti) == access.token_hash:
            del self._jti[access.jti]
        hashes = self._access_by_grant.get(access.grant_id)
        if hashes is not None:
            hashes.discard(access.token_hash)
            if not hashes:
                del self._access_by_grant[access.grant_id]

    def _drop_refresh(self, refresh: RefreshTokenRecord) -> None:
        self._refresh.pop(refresh.token_hash, None)
        hashes = self._refresh_by_grant.get(refresh.grant_id)
        if hashes is not None:
            hashes.discard(refresh.token_hash)
            if not hashes:
                del self._refresh_by_grant[refresh.grant_id]

    def _drop_tokens_of(self, grant_id: str) -> int:
        count = 0
        for token_hash in self._access_by_grant.pop(grant_id, set()):
            access = self._access.pop(token_hash, None)
            if access is not None:
                count += 1
                if self._jti.get(access.jti) == token_hash:
                    del self._jti[access.jti]
        for token_hash in self._refresh_by_grant.pop(grant_id, set()):
            if self._refresh.pop(token_hash, None) is not None:
                count += 1
        return count

    def _revoke(self, grant_id: str, now: float) -> bool:
        """Revoke in place; the caller holds the (implicit) lock: no awaits here."""
        self._drop_tokens_of(grant_id)
        grant = self._grants.get(grant_id)
        if grant is None:
            self._tombstones[grant_id] = now + self._tombstone_ttl
            return False
        if grant.revoked_at is not None:
            return False
        self._grants[grant_id] = grant.model_copy(update={"revoked_at": now})
        return True

    async def get_grant(self, grant_id: str) -> GrantRecord | None:
        return self._grants.get(grant_id)

    async def list_grants(
        self, subject: str | None = None, client_id: str | None = None
    ) -> list[GrantRecord]:
        if client_id is not None:
            candidates = [self._grants[g] for g in self._grants_by_client.get(client_id, ())]
        else:
            candidates = list(self._grants.values())
        found = [
            g
            for g in candidates
            if g.revoked_at is None and (subject is None or g.subject == subject)
        ]
        return sorted(found, key=lambda g: (g.created_at, g.grant_id))

    async def update_grant_upstream(
        self, grant_id: str, upstream: str | None, upstream_expires_at: float | None
    ) -> bool:
        grant = self._grants.get(grant_id)
        if grant is None or grant.revoked_at is not None:
            return False
        self._grants[grant_id] = grant.model_copy(
            update={"upstream": upstream, "upstream_expires_at": upstream_expires_at}
        )
        return True

    async def revoke_grant(self, grant_id: str, now: float) -> bool:
        return self._revoke(grant_id, now)

    async def get_access_token(self, token_hash: str) -> AccessTokenRecord | None:
        return self._access.get(token_hash)

    async def get_access_token_by_jti(self, jti: str) -> AccessTokenRecord | None:
        token_hash = self._jti.get(jti)
        return None if token_hash is None else self._access.get(token_hash)

    async def delete_access_token(self, token_hash: str) -> bool:
        access = self._access.get(token_hash)
        if access is None:
            return False
        self._drop_access(access)
        return True

    async def get_refresh_token(self, token_hash: str) -> RefreshTokenRecord | None:
        return self._refresh.get(token_hash)

    async def rotate_refresh_token(
        self,
        old_hash: str,
        access: AccessTokenRecord,
        refresh: RefreshTokenRecord,
        successor: str,
        now: float,
        grace: float,
    ) -> RotateResult:
        old = self._refresh.get(old_hash)
        if old is None:
            return RotateResult(status=RotateStatus.MISSING)
        grant = self._grants.get(old.grant_id)
        if grant is None or grant.revoked_at is not None:
            return RotateResult(status=RotateStatus.MISSING)
        if old.rotated_at is None:
            self._refresh[old_hash] = old.model_copy(
                update={"rotated_at": now, "successor": successor}
            )
            self._store_access(access)
            self._store_refresh(refresh)
            return RotateResult(status=RotateStatus.ROTATED, grant_id=old.grant_id)
        if grace > 0 and now - old.rotated_at <= grace:
            return RotateResult(
                status=RotateStatus.GRACE, successor=old.successor, grant_id=old.grant_id
            )
        self._revoke(old.grant_id, now)
        return RotateResult(status=RotateStatus.REUSED, grant_id=old.grant_id)

    # ----------------------------------------------------------------- consent
    async def put_consent(self, consent: ConsentRecord) -> None:
        key = (consent.subject, consent.client_id, consent.resource)
        self._consents[key] = consent.model_copy(deep=True)

    async def get_consent(
        self, subject: str, client_id: str, resource: str
    ) -> ConsentRecord | None:
        return self._consents.get((subject, client_id, resource))

    # ----------------------------------------------------------------- signing keys
    async def add_signing_key(self, key: SigningKeyRecord) -> bool:
        if key.kid in self._signing_keys or any(
            k.generation == key.generation for k in self._signing_keys.values()
        ):
            return False
        self._signing_keys[key.kid] = key.model_copy(deep=True)
        return True

    async def list_signing_keys(self) -> list[SigningKeyRecord]:
        return sorted(self._signing_keys.values(), key=lambda k: k.generation)

    async def delete_signing_key(self, kid: str) -> bool:
        return self._signing_keys.pop(kid, None) is not None

    # ----------------------------------------------------------------- housekeeping
    async def gc(self, now: float) -> int:
        removed = 0
        for client in [c for c in self._clients.values() if _expired(c.expires_at, now)]:
            del self._clients[client.client_id]
            self._unindex_client(client)
            removed += 1 + self._revoke_client_grants(client.client_id, now)
        for code_hash in [h for h, c in self._codes.items() if c.expires_at <= now]:
            del self._codes[code_hash]
            removed += 1
        for access in [a for a in self._access.values() if a.expires_at <= now]:
            self._drop_access(access)
            removed += 1
        for refresh in [r for r in self._refresh.values() if r.expires_at <= now]:
            self._drop_refresh(refresh)
            removed += 1
        for grant in [g for g in self._grants.values() if g.expires_at <= now]:
            removed += self._drop_tokens_of(grant.grant_id)
            del self._grants[grant.grant_id]
            by_client = self._grants_by_client.get(grant.client_id)
            if by_client is not None:
                by_client.discard(grant.grant_id)
                if not by_client:
                    del self._grants_by_client[grant.client_id]
            removed += 1
        for grant_id in [g for g, exp in self._tombstones.items() if exp <= now]:
            del self._tombstones[grant_id]
            removed += 1
        for key in [k for k, c in self._consents.items() if c.expires_at <= now]:
            del self._consents[key]
            removed += 1
        for ekey in [k for k, (exp, _) in self._ephemeral.items() if exp <= now]:
            del self._ephemeral[ekey]
            removed += 1
        return removed


def _build(config: MemoryStorageConfig) -> MemoryStorage:
    return MemoryStorage()


# Registered as the ``memory`` entry point of ``mcp_oauthd.storage`` (pyproject.toml).
PLUGIN = StoragePlugin(name="memory", config_model=MemoryStorageConfig, factory=_build)

"""The in-process storage backend: for tests, throwaway demos and one-process setups.

Atomicity comes from asyncio itself: no method body contains an ``await``, so each domain
operation runs to completion before any other coroutine is scheduled. State is lost when
the process exits and is not shared between worker processes.

Grants and their tokens are kept compact, since one daemon may hold hundreds of thousands
of them (issue 10: 100,000 live grants in a daemon under 150 MB, ~600 bytes a grant). A
stored pydantic record costs about 1.5 KB (its ``__dict__``, its fields-set ``set``, a
list, float objects) and a grant comes with three, so records are not stored but rebuilt
on every read, from:

- one ``_Grant`` (``__slots__``) per grant. Its times are packed into one ``bytes`` (a
  float object costs 24 bytes and a pointer, a packed one 8) and its identity (subject,
  username, email, client, resource, scopes, provider) is a tuple interned in
  ``_grant_whos``, shared by every grant with that identity;
- the grant's newest access and refresh tokens, *embedded* in it: the token dicts map
  their keys to the ``_Grant`` itself, whose packed bytes also hold their times and the
  access token's jti. A freshly exchanged grant is thus two objects besides its keys;
- every other token (an older one kept until it expires, a rotated refresh token, one
  whose identity differs from its grant's, e.g. narrowed scopes) as a plain tuple,
  indexed by grant id in ``_loose_access``/``_loose_refresh``;
- token keys: the raw 32-byte SHA-256 (48 bytes smaller than its 64-character hex
  string); a hash that is not a canonical lowercase hex SHA-256 is kept as the string
  given, so a lookup still matches exactly the string stored.

Nothing mutable is shared with callers: everything stored is a str, float, bytes or
tuple, and each read builds a new record with new lists. Records are built without
validation (they were validated when the caller made them), setting the attributes
pydantic's ``model_construct`` sets but without its per-field Python loop: ~1 us, not 4.

The jti index is built by the first ``get_access_token_by_jti`` (the daemon never calls
it: JWT access tokens are looked up by hash too) and kept in step from then on.
"""

from __future__ import annotations

import binascii
import gc
import json
import operator
import struct
import sys
from collections import Counter
from collections.abc import Hashable
from typing import Any, Final, TypeVar

from mcp_oauthd.config.models import MemoryStorageConfig
from mcp_oauthd.plugins import StoragePlugin

from .base import (
    AccessTokenRecord,
    ClientKind,
    ClientRecord,
    CodeRecord,
    ConsentRecord,
    ConsumeResult,
    ConsumeStatus,
    GrantRecord,
    GrantRevoked,
    Record,
    RefreshTokenRecord,
    RotateResult,
    RotateStatus,
    SigningKeyRecord,
    StorageError,
    trusted_record,
)

#: How long a tombstone for a never-created grant id is kept (see ``revoke_grant``).
DEFAULT_TOMBSTONE_TTL = 86_400.0

R = TypeVar("R", bound=Record)
H = TypeVar("H", bound=Hashable)

#: A token's storage key: its SHA-256 as 32 raw bytes, or the hash string itself when it
#: is not a canonical SHA-256 (64 lowercase hex digits).
Key = bytes | str
#: (subject, username, email, client_id, resource, scopes, provider) of a grant.
GrantWho = tuple[str, str | None, str | None, str, str, tuple[str, ...], str]
#: (subject, username, email, client_id, resource, scopes) of an access token.
AccessWho = tuple[str, str | None, str | None, str, str, tuple[str, ...]]
#: An access token not embedded in its grant: (grant_id, jti, who, issued_at, expires_at).
LooseAccess = tuple[str, str, AccessWho, float, float]
#: A refresh token not embedded in its grant:
#: (grant_id, client_id, scopes, issued_at, expires_at, rotated_at, successor).
LooseRefresh = tuple[str, str, tuple[str, ...], float, float, float | None, str | None]

#: A grant's packed times, little-endian doubles (exact: no float changes on the way):
#: its created_at and expires_at, then the issued_at and expires_at of its embedded access
#: token and of its embedded refresh token (stale while none is embedded). The embedded
#: access token's jti, in ASCII, follows.
_TIMES: Final = struct.Struct("<6d")
_PAIR: Final = struct.Struct("<2d")
_ONE: Final = struct.Struct("<d")
_ACCESS_AT: Final = 16
_REFRESH_AT: Final = 32
_JTI_AT: Final = _TIMES.size

_ACCESS_FIELDS: Final = frozenset(AccessTokenRecord.model_fields)
_REFRESH_FIELDS: Final = frozenset(RefreshTokenRecord.model_fields)
_GRANT_FIELDS: Final = frozenset(GrantRecord.model_fields)
_ROTATE_FIELDS: Final = frozenset(RotateResult.model_fields)

_new = object.__new__
_setattr = object.__setattr__
_BY_CREATION = operator.attrgetter("created_at", "grant_id")


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


def _key(token_hash: str) -> Key:
    """The storage key of a token hash (see ``Key``)."""
    if len(token_hash) == 64 and token_hash.isascii():
        text = token_hash.encode()
        # Lower case only (unhexlify takes upper case too, and spaces make it fail): two
        # spellings of one digest must not share a key, as they would not share a string.
        if text.islower() or text.isdigit():
            try:
                return binascii.unhexlify(text)
            except binascii.Error:  # other letters than a-f
                pass
    return token_hash


def _hex(key: Key) -> str:
    """The token hash a key was made from."""
    return key if isinstance(key, str) else key.hex()


# ----------------------------------------------------------------------------- records


def _rotated(status: RotateStatus, successor: str | None, grant_id: str | None) -> RotateResult:
    # Validating the result would cost more than the rotation itself.
    return trusted_record(
        RotateResult,
        _ROTATE_FIELDS,
        {"status": status, "successor": successor, "grant_id": grant_id},
    )


class _Grant:
    """A grant, with its newest access and refresh tokens embedded (see the module doc):
    ``access`` and ``refresh`` are their keys (or None), ``blob`` is ``_TIMES`` + jti."""

    __slots__ = (
        "access",
        "blob",
        "grant_id",
        "refresh",
        "revoked_at",
        "upstream",
        "upstream_expires_at",
        "who",
    )

    def __init__(
        self,
        grant_id: str,
        who: GrantWho,
        blob: bytes,
        upstream: str | None,
        upstream_expires_at: float | None,
        revoked_at: float | None,
    ) -> None:
        self.grant_id = grant_id
        self.who = who
        self.blob = blob
        self.upstream = upstream
        self.upstream_expires_at = upstream_expires_at
        self.revoked_at = revoked_at
        self.access: Key | None = None
        self.refresh: Key | None = None

    def times(self, at: int = 0) -> tuple[float, float]:
        """The pair of times at offset ``at`` (0: created_at and expires_at)."""
        first, second = _PAIR.unpack_from(self.blob, at)
        return first, second

    def with_times(self, at: int, issued_at: float, expires_at: float, jti: bytes) -> bytes:
        """The packed bytes with the token times at offset ``at`` and the jti replaced."""
        blob = self.blob
        return blob[:at] + _PAIR.pack(issued_at, expires_at) + blob[at + 16 : _JTI_AT] + jti

    def record(self) -> GrantRecord:
        who = self.who
        created_at, expires_at = _PAIR.unpack_from(self.blob)
        return trusted_record(
            GrantRecord,
            _GRANT_FIELDS,
            {
                "grant_id": self.grant_id,
                "subject": who[0],
                "username": who[1],
                "email": who[2],
                "client_id": who[3],
                "resource": who[4],
                "scopes": list(who[5]),
                "provider": who[6],
                "created_at": created_at,
                "expires_at": expires_at,
                "upstream": self.upstream,
                "upstream_expires_at": self.upstream_expires_at,
                "revoked_at": self.revoked_at,
            },
        )


AccessEntry = _Grant | LooseAccess
RefreshEntry = _Grant | LooseRefresh


def _access_record(token_hash: str, entry: AccessEntry) -> AccessTokenRecord:
    # The introspection hot path: ``trusted_record`` inlined.
    if isinstance(entry, _Grant):
        blob = entry.blob
        issued_at, expires_at = _PAIR.unpack_from(blob, _ACCESS_AT)
        jti = blob[_JTI_AT:].decode("ascii")
        grant_id = entry.grant_id
        who: AccessWho | GrantWho = entry.who
    else:
        grant_id, jti, who, issued_at, expires_at = entry
    record = _new(AccessTokenRecord)
    _setattr(
        record,
        "__dict__",
        {
            "token_hash": token_hash,
            "jti": jti,
            "grant_id": grant_id,
            "client_id": who[3],
            "subject": who[0],
            "username": who[1],
            "email": who[2],
            "resource": who[4],
            "scopes": list(who[5]),
            "issued_at": issued_at,
            "expires_at": expires_at,
        },
    )
    _setattr(record, "__pydantic_fields_set__", set(_ACCESS_FIELDS))
    _setattr(record, "__pydantic_extra__", None)
    _setattr(record, "__pydantic_private__", None)
    return record


def _refresh_record(token_hash: str, entry: RefreshEntry) -> RefreshTokenRecord:
    values: LooseRefresh
    if isinstance(entry, _Grant):
        issued_at, expires_at = entry.times(_REFRESH_AT)
        values = (entry.grant_id, entry.who[3], entry.who[5], issued_at, expires_at, None, None)
    else:
        values = entry
    grant_id, client_id, scopes, issued_at, expires_at, rotated_at, successor = values
    return trusted_record(
        RefreshTokenRecord,
        _REFRESH_FIELDS,
        {
            "token_hash": token_hash,
            "grant_id": grant_id,
            "client_id": client_id,
            "scopes": list(scopes),
            "issued_at": issued_at,
            "expires_at": expires_at,
            "rotated_at": rotated_at,
            "successor": successor,
        },
    )


def _access_jti(entry: AccessEntry) -> str:
    return entry.blob[_JTI_AT:].decode("ascii") if isinstance(entry, _Grant) else entry[1]


# ----------------------------------------------------------------------------- indexes
# A one-to-many index holds a lone value as itself; a second one makes a set. A grant has
# one loose token or none most of the time, and an empty set alone costs 216 bytes.
def _index_add(index: dict[str, H | set[H]], name: str, item: H) -> None:
    held = index.get(name)
    if held is None:
        index[name] = item
    elif isinstance(held, set):
        held.add(item)
    elif held != item:
        index[name] = {held, item}


def _index_discard(index: dict[str, H | set[H]], name: str, item: H) -> None:
    held = index.get(name)
    if held is None:
        return
    if isinstance(held, set):
        held.discard(item)
        if len(held) == 1:
            index[name] = held.pop()
    elif held == item:
        del index[name]


def _index_pop(index: dict[str, H | set[H]], name: str) -> list[H]:
    held = index.pop(name, None)
    if held is None:
        return []
    return list(held) if isinstance(held, set) else [held]


def _refcounts(table: dict[H, H]) -> list[tuple[H, int]]:
    """Each interned value with its reference count, taken in one fixed context."""
    return [(value, sys.getrefcount(value)) for value in table]


def _table_only_refcount() -> int:
    """The count ``_refcounts`` sees for a value that nothing but its table holds."""
    probe = tuple(str(n) for n in range(2))  # a new tuple, not a shared constant
    table = {probe: probe}
    del probe
    ((_, refs),) = _refcounts(table)
    return refs


_TABLE_ONLY: Final = _table_only_refcount()


def _prune(table: dict[H, H]) -> None:
    """Forget the interned values no grant or token uses any more. (Reference counts are
    CPython's; a value forgotten too early would only cost sharing, never correctness.)"""
    for value, refs in _refcounts(table):
        if refs <= _TABLE_ONLY:
            del table[value]


class MemoryStorage:
    """A ``Storage`` held in the memory of one process."""

    name = "memory"

    def __init__(self, *, tombstone_ttl: float = DEFAULT_TOMBSTONE_TTL) -> None:
        self._tombstone_ttl = tombstone_ttl
        self._clients: dict[str, ClientRecord] = {}
        self._codes: dict[str, CodeRecord] = {}
        self._grants: dict[str, _Grant] = {}
        self._access: dict[Key, AccessEntry] = {}
        self._refresh: dict[Key, RefreshEntry] = {}
        self._consents: dict[tuple[str, str, str], ConsentRecord] = {}
        self._ephemeral: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}
        # grant id -> expiry of the tombstone, for ids revoked before they were created.
        self._tombstones: dict[str, float] = {}
        # Secondary indexes, kept in step with the dicts above.
        self._jti: dict[str, Key] | None = None  # built on first use
        self._loose_access: dict[str, Key | set[Key]] = {}
        self._loose_refresh: dict[str, Key | set[Key]] = {}
        # client id -> its grant, or a list of them: 8 bytes a grant where a set would
        # take ~40. Only ``gc`` removes grants, and it prunes the lists it touches.
        self._grants_by_client: dict[str, _Grant | list[_Grant]] = {}
        self._clients_by_ip: dict[str, set[str]] = {}
        self._signing_keys: dict[str, SigningKeyRecord] = {}
        # Interned identities (see the module doc), pruned by ``gc``.
        self._grant_whos: dict[GrantWho, GrantWho] = {}
        self._access_whos: dict[AccessWho, AccessWho] = {}

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
            self._clients_by_ip.setdefault(client.registered_ip, set()).add(client.client_id)

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

    def _grants_of_client(self, client_id: str) -> list[_Grant]:
        held = self._grants_by_client.get(client_id)
        if held is None:
            return []
        grants = held if isinstance(held, list) else [held]
        # A grant gc removed (and maybe one created again with its id) is not this one.
        return [g for g in grants if self._grants.get(g.grant_id) is g]

    def _revoke_client_grants(self, client_id: str, now: float | None) -> int:
        """Revoke every live grant of a client; return how many tokens went with them."""
        removed = 0
        for grant in self._grants_of_client(client_id):
            if grant.revoked_at is not None:
                continue
            # ``delete_client`` is not given the time: the grant's creation is a lower bound.
            revoked_at = now if now is not None else grant.times()[0]
            removed += self._drop_tokens_of(grant.grant_id)
            self._revoke(grant.grant_id, revoked_at)
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
        grant_id = grant.grant_id
        existing = self._grants.get(grant_id)
        if grant_id in self._tombstones or (
            existing is not None and existing.revoked_at is not None
        ):
            raise GrantRevoked("the grant was revoked before it was created")
        if existing is not None:
            raise StorageError("a grant with this id already exists")
        who: GrantWho = (
            grant.subject,
            grant.username,
            grant.email,
            grant.client_id,
            grant.resource,
            tuple(grant.scopes),
            grant.provider,
        )
        stored = _Grant(
            grant_id,
            self._grant_whos.setdefault(who, who),
            _TIMES.pack(grant.created_at, grant.expires_at, 0.0, 0.0, 0.0, 0.0),
            grant.upstream,
            grant.upstream_expires_at,
            grant.revoked_at,
        )
        self._grants[grant_id] = stored
        by_client = self._grants_by_client.get(grant.client_id)
        if by_client is None:
            self._grants_by_client[grant.client_id] = stored
        elif isinstance(by_client, list):
            by_client.append(stored)
        else:
            self._grants_by_client[grant.client_id] = [by_client, stored]
        self._store_access(access, stored)
        if refresh is not None:
            self._store_refresh(refresh, stored)

    def _grant_of(self, grant_id: str, hint: _Grant) -> _Grant | None:
        return hint if hint.grant_id == grant_id else self._grants.get(grant_id)

    def _store_access(self, access: AccessTokenRecord, hint: _Grant) -> None:
        key = _key(access.token_hash)
        if key in self._access:
            self._drop_access(key)
        jti = access.jti
        grant = self._grant_of(access.grant_id, hint)
        who: AccessWho = (
            access.subject,
            access.username,
            access.email,
            access.client_id,
            access.resource,
            tuple(access.scopes),
        )
        if grant is not None and jti.isascii() and who == grant.who[:6]:
            if grant.access is not None:
                self._loosen_access(grant)
            grant.blob = grant.with_times(
                _ACCESS_AT, access.issued_at, access.expires_at, jti.encode("ascii")
            )
            grant.access = key
            self._access[key] = grant
        else:
            grant_id = access.grant_id if grant is None else grant.grant_id
            self._access[key] = (
                grant_id,
                jti,
                self._access_whos.setdefault(who, who),
                access.issued_at,
                access.expires_at,
            )
            _index_add(self._loose_access, grant_id, key)
        if self._jti is not None:
            self._jti[jti] = key

    def _loosen_access(self, grant: _Grant) -> None:
        """Move the grant's embedded access token out, making room for a newer one."""
        key = grant.access
        assert key is not None
        issued_at, expires_at = grant.times(_ACCESS_AT)
        who = grant.who[:6]
        self._access[key] = (
            grant.grant_id,
            grant.blob[_JTI_AT:].decode("ascii"),
            self._access_whos.setdefault(who, who),
            issued_at,
            expires_at,
        )
        _index_add(self._loose_access, grant.grant_id, key)
        grant.access = None
        grant.blob = grant.blob[:_JTI_AT]

    def _store_refresh(self, refresh: RefreshTokenRecord, hint: _Grant) -> None:
        key = _key(refresh.token_hash)
        if key in self._refresh:
            self._drop_refresh(key)
        grant = self._grant_of(refresh.grant_id, hint)
        scopes = tuple(refresh.scopes)
        if grant is not None:
            who = grant.who
            if scopes == who[5]:
                scopes = who[5]  # shared rather than one more tuple
                if (
                    refresh.client_id == who[3]
                    and refresh.rotated_at is None
                    and refresh.successor is None
                ):
                    if grant.refresh is not None:
                        self._loosen_refresh(grant, None, None)
                    grant.blob = grant.with_times(
                        _REFRESH_AT, refresh.issued_at, refresh.expires_at, grant.blob[_JTI_AT:]
                    )
                    grant.refresh = key
                    self._refresh[key] = grant
                    return
        grant_id = refresh.grant_id if grant is None else grant.grant_id
        self._refresh[key] = (
            grant_id,
            refresh.client_id,
            scopes,
            refresh.issued_at,
            refresh.expires_at,
            refresh.rotated_at,
            refresh.successor,
        )
        _index_add(self._loose_refresh, grant_id, key)

    def _loosen_refresh(
        self, grant: _Grant, rotated_at: float | None, successor: str | None
    ) -> None:
        """Move the grant's embedded refresh token out (it was rotated, or a newer one
        takes its place), with ``rotated_at`` and ``successor`` as given."""
        key = grant.refresh
        assert key is not None
        issued_at, expires_at = grant.times(_REFRESH_AT)
        who = grant.who
        self._refresh[key] = (
            grant.grant_id,
            who[3],
            who[5],
            issued_at,
            expires_at,
            rotated_at,
            successor,
        )
        _index_add(self._loose_refresh, grant.grant_id, key)
        grant.refresh = None

    def _drop_access(self, key: Key) -> bool:
        entry = self._access.pop(key, None)
        if entry is None:
            return False
        if isinstance(entry, _Grant):
            jti = entry.blob[_JTI_AT:].decode("ascii")
            entry.access = None
            entry.blob = entry.blob[:_JTI_AT]
        else:
            jti = entry[1]
            _index_discard(self._loose_access, entry[0], key)
        if self._jti is not None:
            # Unless the jti was taken over by a token stored since, which still lives.
            named = self._jti.get(jti)
            if named is not None and named not in self._access:
                del self._jti[jti]
        return True

    def _drop_refresh(self, key: Key) -> bool:
        entry = self._refresh.pop(key, None)
        if entry is None:
            return False
        if isinstance(entry, _Grant):
            entry.refresh = None
        else:
            _index_discard(self._loose_refresh, entry[0], key)
        return True

    def _drop_tokens_of(self, grant_id: str) -> int:
        access = _index_pop(self._loose_access, grant_id)
        refresh = _index_pop(self._loose_refresh, grant_id)
        grant = self._grants.get(grant_id)
        if grant is not None:
            if grant.access is not None:
                access.append(grant.access)
            if grant.refresh is not None:
                refresh.append(grant.refresh)
        return sum(map(self._drop_access, access)) + sum(map(self._drop_refresh, refresh))

    def _revoke(self, grant_id: str, now: float) -> bool:
        """Revoke in place; the caller holds the (implicit) lock: no awaits here."""
        self._drop_tokens_of(grant_id)
        grant = self._grants.get(grant_id)
        if grant is None:
            self._tombstones[grant_id] = now + self._tombstone_ttl
            return False
        if grant.revoked_at is not None:
            return False
        grant.revoked_at = now
        return True

    async def get_grant(self, grant_id: str) -> GrantRecord | None:
        grant = self._grants.get(grant_id)
        return None if grant is None else grant.record()

    async def list_grants(
        self, subject: str | None = None, client_id: str | None = None
    ) -> list[GrantRecord]:
        candidates = (
            self._grants_of_client(client_id) if client_id is not None else self._grants.values()
        )
        # Records are built here, four GC-tracked objects each: with 100,000 grants the
        # cyclic collector would run full collections over and over while they are built
        # (3x the time). Nothing here awaits, so the pause covers exactly this loop.
        collecting = gc.isenabled()
        gc.disable()
        try:
            found = [
                g.record()
                for g in candidates
                if g.revoked_at is None and (subject is None or g.who[0] == subject)
            ]
            found.sort(key=_BY_CREATION)
        finally:
            if collecting:
                gc.enable()
        return found

    async def count_live_grants(self, now: float) -> int:
        """``CountsForGauges``: the packed times are read in place, no record is built."""
        unpack = _PAIR.unpack_from
        return sum(
            1 for g in self._grants.values() if g.revoked_at is None and unpack(g.blob)[1] > now
        )

    async def count_clients_by_kind(self) -> dict[ClientKind, int]:
        return dict(Counter(client.kind for client in self._clients.values()))

    async def update_grant_upstream(
        self, grant_id: str, upstream: str | None, upstream_expires_at: float | None
    ) -> bool:
        grant = self._grants.get(grant_id)
        if grant is None or grant.revoked_at is not None:
            return False
        grant.upstream = upstream
        grant.upstream_expires_at = upstream_expires_at
        return True

    async def revoke_grant(self, grant_id: str, now: float) -> bool:
        return self._revoke(grant_id, now)

    async def get_access_token(self, token_hash: str) -> AccessTokenRecord | None:
        return self.get_access_token_now(token_hash)

    def get_access_token_now(self, token_hash: str) -> AccessTokenRecord | None:
        """``get_access_token`` without a coroutine (``ReadsAccessTokensNow``)."""
        entry = self._access.get(_key(token_hash))
        return None if entry is None else _access_record(token_hash, entry)

    async def get_access_token_by_jti(self, jti: str) -> AccessTokenRecord | None:
        if self._jti is None:
            # Dict order is storage order, so a (never expected) shared jti names the
            # token stored last, as it would have had the index been kept all along.
            self._jti = {_access_jti(entry): key for key, entry in self._access.items()}
        key = self._jti.get(jti)
        entry = None if key is None else self._access.get(key)
        return None if key is None or entry is None else _access_record(_hex(key), entry)

    async def delete_access_token(self, token_hash: str) -> bool:
        return self._drop_access(_key(token_hash))

    async def get_refresh_token(self, token_hash: str) -> RefreshTokenRecord | None:
        entry = self._refresh.get(_key(token_hash))
        return None if entry is None else _refresh_record(token_hash, entry)

    async def rotate_refresh_token(
        self,
        old_hash: str,
        access: AccessTokenRecord,
        refresh: RefreshTokenRecord,
        successor: str,
        now: float,
        grace: float,
    ) -> RotateResult:
        key = _key(old_hash)
        old = self._refresh.get(key)
        if old is None:
            return _rotated(RotateStatus.MISSING, None, None)
        if isinstance(old, _Grant):
            grant_id, rotated_at, previous = old.grant_id, None, None
        else:
            grant_id, rotated_at, previous = old[0], old[5], old[6]
        grant = self._grants.get(grant_id)
        if grant is None or grant.revoked_at is not None:
            return _rotated(RotateStatus.MISSING, None, None)
        if rotated_at is None:
            if isinstance(old, _Grant):
                self._loosen_refresh(old, now, successor)
            else:
                self._refresh[key] = (*old[:5], now, successor)
            self._store_access(access, grant)
            self._store_refresh(refresh, grant)
            return _rotated(RotateStatus.ROTATED, None, grant_id)
        if grace > 0 and now - rotated_at <= grace:
            return _rotated(RotateStatus.GRACE, previous, grant_id)
        self._revoke(grant_id, now)
        return _rotated(RotateStatus.REUSED, None, grant_id)

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
        removed += self._gc_grants_and_tokens(now)
        for grant_id in [g for g, exp in self._tombstones.items() if exp <= now]:
            del self._tombstones[grant_id]
            removed += 1
        for ckey in [k for k, c in self._consents.items() if c.expires_at <= now]:
            del self._consents[ckey]
            removed += 1
        for ekey in [k for k, (exp, _) in self._ephemeral.items() if exp <= now]:
            del self._ephemeral[ekey]
            removed += 1
        _prune(self._grant_whos)
        _prune(self._access_whos)
        return removed

    def _gc_grants_and_tokens(self, now: float) -> int:
        """Delete the expired tokens, and the expired grants with all their tokens. (A
        method of its own so that no local holds a grant when ``gc`` prunes identities.)"""
        access = [k for k, a in self._access.items() if not isinstance(a, _Grant) and a[4] <= now]
        refresh = [k for k, r in self._refresh.items() if not isinstance(r, _Grant) and r[4] <= now]
        grants = []
        for grant in self._grants.values():
            # One unpack for the grant and its embedded tokens.
            _, expires_at, _, access_expires_at, _, refresh_expires_at = _TIMES.unpack_from(
                grant.blob
            )
            if expires_at <= now:
                grants.append(grant)
            if grant.access is not None and access_expires_at <= now:
                access.append(grant.access)
            if grant.refresh is not None and refresh_expires_at <= now:
                refresh.append(grant.refresh)
        removed = sum(map(self._drop_access, access)) + sum(map(self._drop_refresh, refresh))
        clients: set[str] = set()
        for grant in grants:
            removed += 1 + self._drop_tokens_of(grant.grant_id)
            del self._grants[grant.grant_id]
            clients.add(grant.who[3])
        for client_id in clients:
            live = self._grants_of_client(client_id)
            if not live:
                self._grants_by_client.pop(client_id, None)
            else:
                self._grants_by_client[client_id] = live[0] if len(live) == 1 else live
        return removed


def _build(config: MemoryStorageConfig) -> MemoryStorage:
    return MemoryStorage()


# Registered as the ``memory`` entry point of ``mcp_oauthd.storage`` (pyproject.toml).
PLUGIN = StoragePlugin(name="memory", config_model=MemoryStorageConfig, factory=_build)

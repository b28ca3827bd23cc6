"""The SQLite backend decodes its rows without validating them again (orjson, then the
record built as ``model_construct`` would) and encodes them with orjson: the records read
back must be exactly what validation would give, in value and in type, for rows in the
current shape and for every other row (older shapes, hand-written ones), and never stale."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import mcp_oauthd.storage.sqlite as sqlite_module
from mcp_oauthd.storage import RotateStatus
from mcp_oauthd.storage.base import (
    AccessTokenRecord,
    ClientKind,
    ClientRecord,
    GrantRecord,
    Record,
    RefreshTokenRecord,
)
from mcp_oauthd.storage.sqlite import SqliteStorage
from mcp_oauthd.testing.storage_conformance import (
    NOW,
    create_full_grant,
    make_access,
    make_client,
    make_grant,
    make_refresh,
)
from tests.storage.sqlite_support import config


@pytest.fixture
def storage(sqlite_storage: SqliteStorage) -> SqliteStorage:
    return sqlite_storage


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None, timeout=5)


def assert_same_record(found: Record | None, expected: Record) -> None:
    """Equal values of equal types, field by field (``==`` alone takes 1 for 1.0), and
    the fields counted as set that validating the stored row gives."""
    assert found is not None
    assert type(found) is type(expected)
    assert found == expected
    for name in type(expected).model_fields:
        value, wanted = getattr(found, name), getattr(expected, name)
        assert type(value) is type(wanted), name
        assert value == wanted, name
    assert found.__pydantic_extra__ is None
    assert found.__pydantic_private__ is None


def validated(cls: type[Record], text: str) -> Record:
    return cls.model_validate_json(text)


def set_data(path: Path, table: str, key_column: str, key: str, data: str) -> None:
    with raw(path) as conn:
        conn.execute(f"UPDATE {table} SET data = ? WHERE {key_column} = ?", (data, key))


def stored_data(path: Path, table: str, key_column: str, key: str) -> str:
    with raw(path) as conn:
        row = conn.execute(
            f"SELECT data FROM {table} WHERE {key_column} = ?",
            (key,),
        ).fetchone()
    assert row is not None
    return str(row[0])


# --------------------------------------------------------------------------- round trips
async def test_records_read_back_have_the_stored_values_and_types(
    storage: SqliteStorage,
) -> None:
    grant = make_grant(
        username="alice",
        email="élise@example.com",  # non-ASCII text survives
        scopes=["mcp:tools", "mcp:read"],
        created_at=NOW + 0.1,
        expires_at=NOW + 1e-7 + 30 * 86_400,
        upstream_expires_at=None,
    )
    access = make_access(grant, issued_at=NOW + 0.1, expires_at=1e300, username="alice")
    refresh = make_refresh(grant, issued_at=NOW + 0.3, expires_at=NOW + 1234.5678)
    await storage.create_grant(grant, access, refresh)

    assert_same_record(await storage.get_access_token(access.token_hash), access)
    assert_same_record(await storage.get_access_token_by_jti(access.jti), access)
    assert_same_record(await storage.get_refresh_token(refresh.token_hash), refresh)
    assert_same_record(await storage.get_grant(grant.grant_id), grant)
    assert [g.grant_id for g in await storage.list_grants(subject="alice")] == [grant.grant_id]


async def test_a_record_whose_float_fields_were_given_as_integers_reads_back_floats(
    storage: SqliteStorage,
) -> None:
    # Validation turns 1 into 1.0; the read must too, even where the row holds an int.
    grant = make_grant(created_at=1_700_000_000, expires_at=1_800_000_000)
    access = make_access(grant, issued_at=1_700_000_000, expires_at=1_700_003_600)
    await storage.create_grant(grant, access, None)
    found = await storage.get_access_token(access.token_hash)
    assert_same_record(found, access)
    assert found is not None and type(found.expires_at) is float


async def test_clients_read_back_with_their_kind_as_the_enum_member(
    storage: SqliteStorage,
) -> None:
    client = make_client(kind=ClientKind.STATIC, expires_at=NOW + 10, registered_ip="10.0.0.1")
    await storage.put_client(client)
    found = await storage.get_client(client.client_id)
    assert_same_record(found, client)
    assert found is not None and found.kind is ClientKind.STATIC
    assert [c.client_id for c in await storage.list_clients()] == [client.client_id]


async def test_each_read_builds_its_own_record_and_lists(storage: SqliteStorage) -> None:
    grant, access, refresh = await create_full_grant(storage)
    for read in (
        lambda: storage.get_access_token(access.token_hash),
        lambda: storage.get_refresh_token(refresh.token_hash),
        lambda: storage.get_grant(grant.grant_id),
    ):
        first, second = await read(), await read()
        assert first is not None and second is not None
        assert first is not second
        assert first.scopes is not second.scopes
        first.scopes.append("tampered")  # a caller changing its copy changes nothing stored
        third = await read()
        assert third is not None and "tampered" not in third.scopes


async def test_rows_are_written_as_json_that_validation_reads_back_equal(
    storage: SqliteStorage, db_path: Path
) -> None:
    # Another process (or an older version) validates the rows we write.
    grant, access, refresh = await create_full_grant(storage)
    for cls, table, column, key, record in (
        (AccessTokenRecord, "access_tokens", "token_hash", access.token_hash, access),
        (RefreshTokenRecord, "refresh_tokens", "token_hash", refresh.token_hash, refresh),
        (GrantRecord, "grants", "grant_id", grant.grant_id, grant),
    ):
        text = stored_data(db_path, table, column, key)
        assert json.loads(text) == json.loads(record.model_dump_json())
        assert_same_record(validated(cls, text), record)


async def test_a_rotation_writes_the_rotated_row_and_reads_it_back(
    storage: SqliteStorage, db_path: Path
) -> None:
    grant, _, refresh = await create_full_grant(storage)
    new_access = make_access(grant, now=NOW + 60)
    new_refresh = make_refresh(grant, now=NOW + 60)
    result = await storage.rotate_refresh_token(
        refresh.token_hash, new_access, new_refresh, "sealed-successor", NOW + 60, 0
    )
    assert result.status is RotateStatus.ROTATED
    rotated = refresh.model_copy(update={"rotated_at": NOW + 60, "successor": "sealed-successor"})
    assert_same_record(await storage.get_refresh_token(refresh.token_hash), rotated)
    assert_same_record(await storage.get_access_token(new_access.token_hash), new_access)
    assert_same_record(await storage.get_refresh_token(new_refresh.token_hash), new_refresh)
    text = stored_data(db_path, "refresh_tokens", "token_hash", refresh.token_hash)
    assert_same_record(validated(RefreshTokenRecord, text), rotated)


async def test_a_rotation_at_an_integer_time_reads_back_a_float(storage: SqliteStorage) -> None:
    grant, _, refresh = await create_full_grant(storage)
    now = int(NOW) + 60
    await storage.rotate_refresh_token(
        refresh.token_hash, make_access(grant), make_refresh(grant), "s", now, 0
    )
    found = await storage.get_refresh_token(refresh.token_hash)
    assert found is not None
    assert found.rotated_at == now and type(found.rotated_at) is float


async def test_revoking_a_grant_and_updating_its_upstream_keep_the_other_fields(
    storage: SqliteStorage,
) -> None:
    grant, _, _ = await create_full_grant(storage)
    assert await storage.update_grant_upstream(grant.grant_id, "v1.new", NOW + 99.5) is True
    updated = grant.model_copy(update={"upstream": "v1.new", "upstream_expires_at": NOW + 99.5})
    assert_same_record(await storage.get_grant(grant.grant_id), updated)
    assert await storage.revoke_grant(grant.grant_id, NOW + 7) is True
    revoked = updated.model_copy(update={"revoked_at": NOW + 7})
    assert_same_record(await storage.get_grant(grant.grant_id), revoked)


# ------------------------------------------------------------------ rows of other shapes
def without(record: Record, *names: str) -> str:
    values = json.loads(record.model_dump_json())
    for name in names:
        del values[name]
    return json.dumps(values)


async def test_rows_lacking_optional_fields_read_back_with_their_defaults(
    storage: SqliteStorage, db_path: Path
) -> None:
    # As written by an older version, before these fields existed.
    grant, access, refresh = await create_full_grant(storage)
    client = make_client()
    await storage.put_client(client)
    cases: list[tuple[type[Record], str, str, str, str, Any]] = [
        (
            AccessTokenRecord,
            "access_tokens",
            "token_hash",
            access.token_hash,
            without(access, "username", "email"),
            lambda: storage.get_access_token(access.token_hash),
        ),
        (
            RefreshTokenRecord,
            "refresh_tokens",
            "token_hash",
            refresh.token_hash,
            without(refresh, "rotated_at", "successor"),
            lambda: storage.get_refresh_token(refresh.token_hash),
        ),
        (
            GrantRecord,
            "grants",
            "grant_id",
            grant.grant_id,
            without(grant, "upstream", "upstream_expires_at", "revoked_at"),
            lambda: storage.get_grant(grant.grant_id),
        ),
        (
            ClientRecord,
            "clients",
            "client_id",
            client.client_id,
            without(client, "registered_ip", "metadata"),
            lambda: storage.get_client(client.client_id),
        ),
    ]
    for cls, table, column, key, text, read in cases:
        set_data(db_path, table, column, key, text)
        found = await read()
        expected = validated(cls, text)
        assert_same_record(found, expected)
        assert found.__pydantic_fields_set__ == expected.__pydantic_fields_set__


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda v: {**v, "retired_field": "x"}, id="an unknown field"),
        pytest.param(lambda v: dict(reversed(list(v.items()))), id="fields in another order"),
        pytest.param(lambda v: {**v, "issued_at": 1_700_000_000}, id="an int for a float"),
        pytest.param(lambda v: {**v, "expires_at": 1e3}, id="an exponent float"),
    ],
)
async def test_other_row_shapes_read_back_as_validation_reads_them(
    storage: SqliteStorage, db_path: Path, change: Any
) -> None:
    _, access, _ = await create_full_grant(storage)
    text = json.dumps(change(json.loads(access.model_dump_json())))
    set_data(db_path, "access_tokens", "token_hash", access.token_hash, text)
    found = await storage.get_access_token(access.token_hash)
    expected = validated(AccessTokenRecord, text)
    assert_same_record(found, expected)
    assert found is not None
    assert found.__pydantic_fields_set__ == expected.__pydantic_fields_set__


async def test_a_malformed_row_fails_as_validation_fails(
    storage: SqliteStorage, db_path: Path
) -> None:
    _, access, _ = await create_full_grant(storage)
    for text in ("not json", "[1, 2]", json.dumps({"token_hash": access.token_hash})):
        set_data(db_path, "access_tokens", "token_hash", access.token_hash, text)
        with pytest.raises(ValueError):  # pydantic's ValidationError, as before
            await storage.get_access_token(access.token_hash)


def test_the_decoders_know_every_field_of_their_records() -> None:
    # A field added to a record must be added to its decoder's float checks if it holds
    # a float: this lists what the decoders were written for.
    assert tuple(AccessTokenRecord.model_fields) == sqlite_module._ACCESS_KEYS
    assert tuple(RefreshTokenRecord.model_fields) == sqlite_module._REFRESH_KEYS
    assert tuple(GrantRecord.model_fields) == sqlite_module._GRANT_KEYS
    assert tuple(ClientRecord.model_fields) == sqlite_module._CLIENT_KEYS
    floats = {
        cls.__name__: sorted(
            name for name, field in cls.model_fields.items() if "float" in str(field.annotation)
        )
        for cls in (AccessTokenRecord, RefreshTokenRecord, GrantRecord, ClientRecord)
    }
    assert floats == {
        "AccessTokenRecord": ["expires_at", "issued_at"],
        "RefreshTokenRecord": ["expires_at", "issued_at", "rotated_at"],
        "GrantRecord": ["created_at", "expires_at", "revoked_at", "upstream_expires_at"],
        "ClientRecord": ["created_at", "expires_at"],
    }


# --------------------------------------------------------------------------- freshness
async def test_a_changed_row_is_read_as_changed_never_from_an_earlier_decoding(
    storage: SqliteStorage, db_path: Path
) -> None:
    grant, access, refresh = await create_full_grant(storage)
    client = make_client()
    await storage.put_client(client)
    for _ in range(2):  # decode (and memoise, where anything is) first
        assert await storage.get_access_token(access.token_hash) == access
        assert await storage.get_client(client.client_id) == client
        assert await storage.get_grant(grant.grant_id) == grant
        assert await storage.get_refresh_token(refresh.token_hash) == refresh
    # Another process rewrites every row with other values.
    changed_access = access.model_copy(update={"scopes": ["other"], "expires_at": NOW + 1.5})
    changed_client = client.model_copy(update={"client_name": "renamed", "expires_at": NOW})
    changed_grant = grant.model_copy(update={"revoked_at": NOW + 2.5})
    changed_refresh = refresh.model_copy(update={"rotated_at": NOW + 3.5, "successor": "x"})
    set_data(db_path, "access_tokens", "token_hash", access.token_hash,
             changed_access.model_dump_json())  # fmt: skip
    set_data(db_path, "clients", "client_id", client.client_id, changed_client.model_dump_json())
    set_data(db_path, "grants", "grant_id", grant.grant_id, changed_grant.model_dump_json())
    set_data(db_path, "refresh_tokens", "token_hash", refresh.token_hash,
             changed_refresh.model_dump_json())  # fmt: skip
    assert_same_record(await storage.get_access_token(access.token_hash), changed_access)
    assert_same_record(await storage.get_client(client.client_id), changed_client)
    assert_same_record(await storage.get_grant(grant.grant_id), changed_grant)
    assert_same_record(await storage.get_refresh_token(refresh.token_hash), changed_refresh)
    # And a row deleted elsewhere is gone at once.
    with raw(db_path) as conn:
        conn.execute("DELETE FROM access_tokens WHERE token_hash = ?", (access.token_hash,))
        conn.execute("DELETE FROM clients WHERE client_id = ?", (client.client_id,))
    assert await storage.get_access_token(access.token_hash) is None
    assert await storage.get_access_token_by_jti(access.jti) is None
    assert await storage.get_client(client.client_id) is None


async def test_a_token_deleted_or_revoked_by_another_instance_is_not_returned(
    db_path: Path,
) -> None:
    a, b = SqliteStorage(config(db_path)), SqliteStorage(config(db_path))
    await a.open()
    await b.open()
    try:
        grant, access, refresh = await create_full_grant(a)
        other_grant, other_access, _ = await create_full_grant(a)
        assert await a.get_access_token(access.token_hash) == access
        assert await a.get_access_token(other_access.token_hash) == other_access
        assert await b.delete_access_token(access.token_hash) is True
        assert await b.revoke_grant(other_grant.grant_id, NOW + 1) is True
        assert await a.get_access_token(access.token_hash) is None
        assert await a.get_access_token(other_access.token_hash) is None
        assert await a.get_refresh_token(refresh.token_hash) == refresh
        assert await a.get_grant(grant.grant_id) == grant
    finally:
        await a.close()
        await b.close()

"""The journal backend passes mcp-oauthd's storage conformance suite, and survives restarts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mcp_oauthd_example.journal import JournalStorage, JournalStorageConfig

from mcp_oauthd.storage.base import ConsumeStatus, Storage, StorageError
from mcp_oauthd.testing.storage_conformance import (
    NOW,
    StorageConformance,
    create_full_grant,
    make_client,
    make_code,
)


def journal(path: Path, *, fsync: bool = True) -> JournalStorage:
    return JournalStorage(JournalStorageConfig(path=path, fsync=fsync))


class TestJournalStorage(StorageConformance):
    @pytest.fixture
    async def storage(self, tmp_path: Path) -> AsyncIterator[Storage]:
        # fsync off: the suite checks behaviour, not durability, and stays fast.
        backend = journal(tmp_path / "journal.jsonl", fsync=False)
        await backend.open()
        yield backend
        await backend.close()


async def test_grants_tokens_and_used_codes_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    first = journal(path)
    await first.open()
    client = make_client()
    await first.put_client(client)
    grant, access, refresh = await create_full_grant(first)
    code = make_code()
    await first.put_code(code)
    assert (await first.consume_code(code.code_hash, NOW)).status is ConsumeStatus.OK
    await first.close()

    second = journal(path)
    await second.open()
    try:
        assert await second.get_client(client.client_id) == client
        assert await second.get_grant(grant.grant_id) == grant
        assert await second.get_access_token(access.token_hash) == access
        assert await second.get_refresh_token(refresh.token_hash) == refresh
        # Single use holds across the restart: the code stays consumed.
        assert (await second.consume_code(code.code_hash, NOW)).status is ConsumeStatus.REUSED
    finally:
        await second.close()


async def test_a_revocation_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    first = journal(path)
    await first.open()
    grant, access, _ = await create_full_grant(first)
    assert await first.revoke_grant(grant.grant_id, NOW + 10)
    await first.close()

    second = journal(path)
    await second.open()
    try:
        stored = await second.get_grant(grant.grant_id)
        assert stored is not None
        assert stored.revoked_at == NOW + 10
        assert await second.get_access_token(access.token_hash) is None
    finally:
        await second.close()


async def test_a_torn_last_entry_is_dropped_and_the_journal_stays_usable(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    first = journal(path)
    await first.open()
    client = make_client()
    await first.put_client(client)
    await first.close()
    with path.open("ab") as file:
        file.write(b'{"op": "put_client", "args": [{"rec')  # the process died mid-write

    second = journal(path)
    await second.open()
    later = make_client()
    await second.put_client(later)
    await second.close()

    third = journal(path)
    await third.open()
    try:
        assert await third.list_clients() == sorted([client, later], key=lambda c: c.client_id)
    finally:
        await third.close()


async def test_a_corrupt_entry_in_the_middle_refuses_to_open(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_bytes(b"not json\n{}\n")

    with pytest.raises(StorageError, match="entry 1 is corrupt"):
        await journal(path).open()


async def test_a_second_process_cannot_open_a_journal_in_use(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    first = journal(path)
    await first.open()
    try:
        # flock locks belong to an open file, so a second open conflicts like a second
        # process would.
        with pytest.raises(StorageError, match="in use by another process"):
            await journal(path).open()
    finally:
        await first.close()


async def test_the_journal_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    backend = journal(path)
    await backend.open()
    await backend.close()

    assert path.stat().st_mode & 0o077 == 0

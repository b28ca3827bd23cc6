"""The encryption key ring at rest: `mcp-oauthd keys rotate-encryption` re-encrypts the
stored upstream token sets under the primary key (sqlite and redis, while the daemon
serves), and a missing or short key is refused before anything starts."""

from __future__ import annotations

import asyncio
import base64
import secrets
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from pydantic import SecretStr

from mcp_oauthd.app import create_app
from mcp_oauthd.cli import main
from mcp_oauthd.clock import FakeClock
from mcp_oauthd.config.models import RedisStorageConfig, SqliteStorageConfig
from mcp_oauthd.security.audit import Auditor
from mcp_oauthd.security.crypto import KeyRing, b64u_decode
from mcp_oauthd.service.maintenance import reencrypt
from mcp_oauthd.storage import build_storage
from mcp_oauthd.storage.base import AccessTokenRecord, GrantRecord, Storage
from mcp_oauthd.storage.memory import MemoryStorage
from mcp_oauthd.testing.daemon import running
from mcp_oauthd.testing.fake_idp import FakeOidcProvider
from mcp_oauthd.testing.redis_server import redis_answers
from tests.conftest import base_config, free_port
from tests.daemon import Daemon
from tests.resource.conftest import (
    ACCESS_TOKEN_TYPE,
    EXCHANGE_GRANT,
    SECRETS,
    clients,
    oidc_provider,
    resources,
)

AD = b"upstream"
COOKIE_SECRET = "cookie-secret-0123456789abcdef-0123456789"


def new_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


OLD, NEW, LOST = new_key(), new_key(), new_key()


def ring(*keys: tuple[str, str]) -> KeyRing:
    return KeyRing((kid, b64u_decode(key)) for kid, key in keys)


def security(*keys: tuple[str, str]) -> dict[str, Any]:
    return {
        "encryption_keys": [{"id": kid, "key": key} for kid, key in keys],
        "cookie_secret": COOKIE_SECRET,
    }


def write_config(tmp_path: Path, storage: dict[str, Any], *keys: tuple[str, str]) -> Path:
    path = tmp_path / f"config-{uuid.uuid4().hex[:6]}.yaml"
    data = {
        "issuer": "http://127.0.0.1:8080",
        "storage": storage,
        "resources": [{"uri": "http://127.0.0.1:9999/mcp"}],
        "security": security(*keys),
        "logging": {"access_log": False},
    }
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


async def run_cli(*argv: str) -> int:
    # The CLI runs its own event loop: give it a thread, so a daemon on this loop serves on.
    return await asyncio.to_thread(main, list(argv))


def grant(grant_id: str, upstream: str | None) -> tuple[GrantRecord, AccessTokenRecord]:
    record = GrantRecord(
        grant_id=grant_id,
        subject="alice",
        client_id="cli",
        resource="http://127.0.0.1:9999/mcp",
        scopes=["files:read"],
        provider="oidc",
        created_at=1000.0,
        expires_at=10**10,
        upstream=upstream,
        upstream_expires_at=5000.0,
    )
    access = AccessTokenRecord(
        token_hash=f"h-{grant_id}",
        jti=f"j-{grant_id}",
        grant_id=grant_id,
        client_id="cli",
        subject="alice",
        resource=record.resource,
        scopes=record.scopes,
        issued_at=1000.0,
        expires_at=10**10,
    )
    return record, access


async def seed(storage: Storage) -> dict[str, bytes]:
    """Grants under the old key, under the new one, with no upstream, and under a key
    nobody has any more. Returns the plaintext each grant must still decrypt to."""
    old, new, lost = ring(("old", OLD)), ring(("new", NEW)), ring(("lost", LOST))
    plain = {f"g-{i}": f'{{"access_token": "upstream-{i}"}}'.encode() for i in range(4)}
    for grant_id, sealed in (
        ("g-0", old.encrypt(plain["g-0"], AD)),
        ("g-1", old.encrypt(plain["g-1"], AD)),
        ("g-2", new.encrypt(plain["g-2"], AD)),
        ("g-3", lost.encrypt(plain["g-3"], AD)),
        ("g-none", None),
    ):
        await storage.create_grant(*grant(grant_id, sealed), None)
    return plain


async def assert_all_under_new_key(storage: Storage, plain: dict[str, bytes]) -> None:
    current = ring(("new", NEW))
    for grant_id in ("g-0", "g-1", "g-2"):
        record = await storage.get_grant(grant_id)
        assert record is not None and record.upstream is not None
        assert record.upstream.startswith("v1.new.")
        assert current.decrypt(record.upstream, AD) == plain[grant_id]
        assert record.upstream_expires_at == 5000.0


async def test_rotate_encryption_reencrypts_sqlite_grants_and_reports_what_it_cannot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "state.db"
    storage = build_storage(SqliteStorageConfig(path=db))
    await storage.open()
    plain = await seed(storage)
    config = write_config(tmp_path, {"type": "sqlite", "path": str(db)}, ("new", NEW), ("old", OLD))

    status = await run_cli("keys", "rotate-encryption", "-c", str(config), "-o", "json")

    out = capsys.readouterr()
    assert status == 1, out  # one grant no configured key decrypts
    report = yaml.safe_load(out.out)
    assert report["grants_reencrypted"] == 2
    assert report["grants_already_current"] == 2  # under "new", and the one with no upstream
    assert report["grants_unreadable"] == ["g-3"]
    await assert_all_under_new_key(storage, plain)
    # Nothing secret is printed: no key, no ciphertext, no upstream token.
    for text in (out.out, out.err):
        assert NEW not in text and OLD not in text
        assert "v1." not in text and "upstream-" not in text
    assert '"encryption.reencrypted"' in out.err  # the audit event, on stderr
    await storage.close()


@pytest.mark.skipif(not redis_answers(), reason="no Redis at 127.0.0.1:6379")
async def test_rotate_encryption_reencrypts_redis_grants(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "redis://127.0.0.1:6379/0"
    prefix = f"mcp-oauthd-test:{uuid.uuid4().hex}:"
    storage = build_storage(RedisStorageConfig(url=SecretStr(url), key_prefix=prefix))
    await storage.open()
    try:
        plain = await seed(storage)
        await storage.revoke_grant("g-3", 1000.0)  # the unreadable one is gone
        config = write_config(
            tmp_path,
            {"type": "redis", "url": url, "key_prefix": prefix},
            ("new", NEW),
            ("old", OLD),
        )
        status = await run_cli("keys", "rotate-encryption", "-c", str(config), "-o", "json")
        out = capsys.readouterr().out
        assert status == 0, out
        assert yaml.safe_load(out)["grants_reencrypted"] == 2
        await assert_all_under_new_key(storage, plain)
    finally:
        from redis.asyncio import Redis

        client: Redis = Redis.from_url(url)
        keys = [k async for k in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        await storage.close()


async def test_a_grant_the_server_rewrote_meanwhile_is_left_as_the_server_wrote_it() -> None:
    """The daemon refreshed the upstream tokens between the read and the write: its newer
    token set must win over the re-encryption of the older one."""
    server = ring(("new", NEW), ("old", OLD))

    class RefreshingMeanwhile(MemoryStorage):
        async def list_grants(
            self, subject: str | None = None, client_id: str | None = None
        ) -> list[GrantRecord]:
            found = await super().list_grants(subject, client_id)
            fresh = server.encrypt(b'{"access_token": "refreshed"}', AD)
            await self.update_grant_upstream("g-0", fresh, 9000.0)
            return found

    storage = RefreshingMeanwhile()
    await seed(storage)
    report = await reencrypt(storage, ring(("new", NEW), ("old", OLD)))
    assert report.raced == 1
    assert report.reencrypted == 1  # g-1
    record = await storage.get_grant("g-0")
    assert record is not None and record.upstream is not None
    assert server.decrypt(record.upstream, AD) == b'{"access_token": "refreshed"}'
    assert record.upstream_expires_at == 9000.0


@pytest.fixture
async def idp() -> AsyncIterator[FakeOidcProvider]:
    async with FakeOidcProvider() as fake:
        yield fake


async def test_after_rotation_the_old_key_can_be_removed_and_upstream_tokens_still_flow(
    tmp_path: Path, http: aiohttp.ClientSession, idp: FakeOidcProvider
) -> None:
    """The operator's procedure end to end on sqlite: sign in under the old key; restart
    with the new key first; rotate while that daemon serves; restart with only the new
    key: the MCP server still gets the user's upstream token by token exchange."""
    db = tmp_path / "state.db"
    clock = FakeClock()
    idp.clock = clock

    async def start(*keys: tuple[str, str]) -> tuple[Daemon, Any]:
        port = free_port()
        config = base_config(
            port,
            storage={"type": "sqlite", "path": str(db)},
            provider=oidc_provider(idp),
            resources=resources(),
            clients=clients(),
            security=security(*keys),
        )
        app = create_app(config, clock=clock, auditor=Auditor())
        ctx = running(app, port)
        url = await ctx.__aenter__()
        return Daemon(url, config, MemoryStorage(), clock, Auditor(), http), ctx

    async def exchange(daemon: Daemon, token: str) -> tuple[int, Any]:
        data = {
            "grant_type": EXCHANGE_GRANT,
            "subject_token": token,
            "subject_token_type": ACCESS_TOKEN_TYPE,
        }
        auth = aiohttp.BasicAuth("files-rs", SECRETS["files-rs"])
        async with http.post(daemon.url + "/oauth/token", data=data, auth=auth) as resp:
            return resp.status, await resp.json()

    first, ctx = await start(("old", OLD))
    tokens = await first.tokens()
    status, before = await exchange(first, tokens["access_token"])
    assert status == 200, before
    await ctx.__aexit__(None, None, None)

    second, ctx = await start(("new", NEW), ("old", OLD))
    config = write_config(tmp_path, {"type": "sqlite", "path": str(db)}, ("new", NEW), ("old", OLD))
    assert await run_cli("keys", "rotate-encryption", "-c", str(config)) == 0
    status, _ = await exchange(second, tokens["access_token"])  # served during and after
    assert status == 200
    await ctx.__aexit__(None, None, None)

    third, ctx = await start(("new", NEW))
    try:
        status, after = await exchange(third, tokens["access_token"])
        assert status == 200, after
        assert after["access_token"] == before["access_token"]
    finally:
        await ctx.__aexit__(None, None, None)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (base64.urlsafe_b64encode(b"too short").decode(), "32 bytes"),
        ("not base64 at all !!", "32 bytes"),
        ({"env": "MCP_OAUTHD_TEST_UNSET_KEY"}, "MCP_OAUTHD_TEST_UNSET_KEY is not set"),
    ],
)
@pytest.mark.parametrize("command", [["serve"], ["check-config"], ["keys", "rotate-encryption"]])
def test_a_missing_or_short_encryption_key_is_refused_before_anything_starts(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    key: Any,
    message: str,
    command: list[str],
) -> None:
    monkeypatch.delenv("MCP_OAUTHD_TEST_UNSET_KEY", raising=False)
    path = tmp_path / "config.yaml"
    data = {
        "issuer": "http://127.0.0.1:8080",
        "storage": {"type": "sqlite", "path": str(tmp_path / "state.db")},
        "resources": [{"uri": "http://127.0.0.1:9999/mcp"}],
        "security": {"encryption_keys": [{"id": "k1", "key": key}]},
    }
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert main([*command, "-c", str(path)]) == 1
    err = capsys.readouterr().err
    assert "security.encryption_keys" in err
    assert message in err
    if isinstance(key, str):
        assert key not in err  # the rejected value is never echoed
    assert not (tmp_path / "state.db").exists()  # nothing was opened


def test_memory_storage_has_nothing_to_rotate_from_outside(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, {"type": "memory"}, ("new", NEW))
    assert main(["keys", "rotate-encryption", "-c", str(config)]) == 1
    assert "memory storage" in capsys.readouterr().err

"""The operator CLI against the SQLite file a running daemon uses: find a user's grants,
revoke them in one command (incident response), list and delete clients, list keys, and
collect garbage, all while the daemon serves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.admin.conftest import (
    COOKIE_SECRET,
    KEY_NEW,
    KEY_OLD,
    WEBAPP_SECRET,
    CliResult,
    LiveDaemon,
    cli_process,
)

DAY = 86400.0


@pytest.fixture
async def daemon(start_daemon: Any, tmp_path: Path) -> LiveDaemon:
    result: LiveDaemon = await start_daemon({"type": "sqlite", "path": str(tmp_path / "state.db")})
    return result


def assert_no_secret(result: CliResult, *more: str) -> None:
    text = result.out + result.err
    for needle in (
        "secret_hash",
        "sha256:",
        "$argon2",
        "mcpat_",
        "mcprt_",
        'upstream"',
        KEY_NEW,
        KEY_OLD,
        COOKIE_SECRET,
        WEBAPP_SECRET,
        *more,
    ):
        assert needle not in text, needle


async def test_an_operator_revokes_every_grant_of_a_user_with_one_command(
    daemon: LiveDaemon, cli: Any
) -> None:
    first = await daemon.tokens("alice")
    second = await daemon.tokens("alice")
    bystander = await daemon.tokens("mallory")

    listed = await cli(daemon, "grants", "list", "--user", "local:alice", "--output", "json")
    assert listed.code == 0, listed.err
    assert [g["subject"] for g in listed.json] == ["local:alice", "local:alice"]
    assert {g["client_id"] for g in listed.json} == {"cli"}
    assert listed.json[0]["client_name"] == "Test CLI"
    assert_no_secret(listed, first["refresh_token"], first["access_token"])

    # By email, in another case than the IdP sent it: the same person.
    revoked = await cli(daemon, "grants", "revoke", "--user", "alice@example.COM", "-o", "json")
    assert revoked.code == 0, revoked.err
    assert len(revoked.json) == 2
    audit = [json.loads(line) for line in revoked.err.splitlines()]
    assert [a["event"] for a in audit] == ["grant.revoked", "grant.revoked"]
    assert {a["reason"] for a in audit} == {"admin"}
    assert_no_secret(revoked, first["refresh_token"], second["refresh_token"])

    # The daemon refuses the revoked refresh tokens at once; the bystander is untouched.
    for tokens in (first, second):
        status, body = await daemon.refresh(tokens["refresh_token"])
        assert status == 400
        assert body["error"] == "invalid_grant"
    status, body = await daemon.refresh(bystander["refresh_token"])
    assert status == 200, body
    left = await cli(daemon, "grants", "list", "-o", "json")
    assert [g["subject"] for g in left.json] == ["local:mallory"]


async def test_grants_list_prints_a_readable_table_and_filters_by_client(
    daemon: LiveDaemon, cli: Any
) -> None:
    await daemon.tokens("alice")
    table = await cli(daemon, "grants", "list")
    assert table.code == 0
    header, row = table.out.splitlines()
    assert header.split()[:3] == ["GRANT", "ID", "SUBJECT"]
    assert "local:alice" in row
    assert "Alice@Example.com" in row
    assert "files:read" in row
    none = await cli(daemon, "grants", "list", "--client", "webapp", "-o", "json")
    assert none.json == []


async def test_revoking_needs_a_filter_and_nothing_is_revoked_without_one(
    daemon: LiveDaemon, cli: Any
) -> None:
    tokens = await daemon.tokens("alice")
    result = await cli(daemon, "grants", "revoke")
    assert result.code == 1
    assert "--user" in result.err
    assert "Traceback" not in result.err
    status, _ = await daemon.refresh(tokens["refresh_token"])
    assert status == 200


async def test_one_grant_is_revoked_by_its_id(daemon: LiveDaemon, cli: Any) -> None:
    keep = await daemon.tokens("alice")
    daemon.clock.advance(60)  # grants are listed oldest first
    kill = await daemon.tokens("alice")
    grants = (await cli(daemon, "grants", "list", "-o", "json")).json
    newest = grants[-1]["grant_id"]
    result = await cli(daemon, "grants", "revoke", "--grant", newest, "-o", "json")
    assert [g["grant_id"] for g in result.json] == [newest]
    assert (await daemon.refresh(kill["refresh_token"]))[0] == 400
    assert (await daemon.refresh(keep["refresh_token"]))[0] == 200


async def test_clients_list_shows_static_and_registered_clients(
    daemon: LiveDaemon, cli: Any
) -> None:
    registered = await daemon.register(client_name="Claude Code")
    confidential = await daemon.register(
        client_name="Server App",
        redirect_uris=["https://server.example.com/cb"],
        token_endpoint_auth_method="client_secret_basic",
    )
    await daemon.tokens("alice")
    result = await cli(daemon, "clients", "list", "-o", "json")
    assert result.code == 0, result.err
    by_id = {c["client_id"]: c for c in result.json}
    assert by_id["cli"]["kind"] == "static"
    assert by_id["cli"]["live_grants"] == 1
    assert by_id["webapp"]["type"] == "confidential"
    assert by_id[registered["client_id"]]["kind"] == "dynamic"
    assert by_id[registered["client_id"]]["client_name"] == "Claude Code"
    assert by_id[registered["client_id"]]["expires_at"] is not None
    assert by_id[confidential["client_id"]]["type"] == "confidential"
    assert_no_secret(
        result, confidential["client_secret"], confidential["registration_access_token"]
    )

    table = await cli(daemon, "clients", "list")
    assert table.out.splitlines()[0].split()[:3] == ["CLIENT", "ID", "KIND"]
    assert "Claude Code" in table.out


async def test_clients_show_tells_whether_secrets_exist_without_printing_them(
    daemon: LiveDaemon, cli: Any
) -> None:
    created = await daemon.register(
        client_name="Server App",
        redirect_uris=["https://server.example.com/cb"],
        token_endpoint_auth_method="client_secret_basic",
    )
    for output in ("json", "table"):
        shown = await cli(daemon, "clients", "show", created["client_id"], "-o", output)
        assert shown.code == 0, shown.err
        assert_no_secret(shown, created["client_secret"], created["registration_access_token"])
    shown = await cli(daemon, "clients", "show", created["client_id"], "-o", "json")
    assert shown.json["has_secret"] is True
    assert shown.json["has_registration_access_token"] is True
    assert shown.json["registered_ip"] == "127.0.0.1"
    static = await cli(daemon, "clients", "show", "webapp", "-o", "json")
    assert static.json["has_secret"] is True
    assert_no_secret(static)
    missing = await cli(daemon, "clients", "show", "nope")
    assert missing.code == 1
    assert "no client" in missing.err


async def test_deleting_a_registered_client_kills_its_grants(daemon: LiveDaemon, cli: Any) -> None:
    created = await daemon.register()
    client_id = created["client_id"]
    tokens = await daemon.tokens(
        "alice", client_id=client_id, redirect_uri="http://127.0.0.1:7777/cb"
    )
    deleted = await cli(daemon, "clients", "delete", client_id, "-o", "json")
    assert deleted.code == 0, deleted.err
    assert deleted.json == {"client_id": client_id, "deleted": True, "revoked_grants": 1}
    status, body = await daemon.refresh(tokens["refresh_token"], client_id=client_id)
    assert status in (400, 401), body
    listed = await cli(daemon, "clients", "list", "-o", "json")
    assert client_id not in {c["client_id"] for c in listed.json}


async def test_a_static_client_cannot_be_deleted_from_the_cli(daemon: LiveDaemon, cli: Any) -> None:
    result = await cli(daemon, "clients", "delete", "cli")
    assert result.code == 1
    assert "config file" in result.err


async def test_gc_removes_expired_records_and_keeps_live_ones(daemon: LiveDaemon, cli: Any) -> None:
    await daemon.tokens("alice")
    now = daemon.clock.now()
    # Now: only the consumed authorization code and finished flow state have expired by
    # the time the code's lifetime has passed; the grant lives on.
    soon = await cli(daemon, "gc", "--now", str(now + 3600), "-o", "json")
    assert soon.code == 0, soon.err
    assert soon.json["removed"] >= 1
    assert len((await cli(daemon, "grants", "list", "-o", "json")).json) == 1
    # After the grant's absolute lifetime (90 days) it is gone, with its tokens.
    later = await cli(daemon, "gc", "--now", str(now + 91 * DAY), "-o", "json")
    assert later.json["removed"] >= 2
    assert (await cli(daemon, "grants", "list", "-o", "json")).json == []
    again = await cli(daemon, "gc", "--now", str(now + 91 * DAY))
    assert again.out.split() == ["removed", "0"]


async def test_keys_list_names_the_primary_key_and_never_key_material(
    daemon: LiveDaemon, cli: Any
) -> None:
    result = await cli(daemon, "keys", "list", "-o", "json")
    assert result.code == 0, result.err
    assert [(k["id"], k["state"]) for k in result.json] == [
        ("k2", "primary"),
        ("k1", "decrypt-only"),
    ]
    assert_no_secret(result)
    table = await cli(daemon, "keys", "list")
    assert "primary" in table.out
    assert_no_secret(table)


async def test_keys_rotate_makes_a_new_signing_key_current(
    start_daemon: Any, tmp_path: Path, cli: Any
) -> None:
    daemon = await start_daemon(
        {"type": "sqlite", "path": str(tmp_path / "jwt.db")}, tokens={"format": "jwt"}
    )
    listed = (await cli(daemon, "keys", "list", "-o", "json")).json
    assert {k["state"] for k in listed if k["type"] == "signing"} == {"current", "next"}
    # Its own process: the key manager logs the new key on stderr; stdout stays pure JSON.
    rotated = await cli_process(daemon, "keys", "rotate", "-o", "json")
    assert rotated.code == 0, rotated.err
    assert rotated.json["state"] == "current"
    assert "signing key created" in rotated.err
    assert "private" not in rotated.out
    assert "-----BEGIN" not in rotated.out + rotated.err
    after = {k["id"]: k["state"] for k in (await cli(daemon, "keys", "list", "-o", "json")).json}
    assert after[rotated.json["id"]] == "current"


async def test_keys_rotate_explains_that_opaque_tokens_have_no_signing_key(
    daemon: LiveDaemon, cli: Any
) -> None:
    result = await cli(daemon, "keys", "rotate")
    assert result.code == 1
    assert "security.encryption_keys" in result.err


async def test_operator_commands_refuse_memory_storage_with_a_reason(
    start_daemon: Any, cli: Any
) -> None:
    daemon = await start_daemon({"type": "memory"})
    result = await cli(daemon, "grants", "list")
    assert result.code == 1
    assert "memory storage" in result.err
    assert "Traceback" not in result.err


async def test_the_installed_command_lists_clients_as_json_in_its_own_process(
    daemon: LiveDaemon,
) -> None:
    await daemon.register(client_name="Cursor")
    result = await cli_process(daemon, "clients", "list", "--output", "json")
    assert result.code == 0, result.err
    names = {c["client_name"] for c in result.json}
    assert {"Test CLI", "Web App", "Cursor"} <= names


async def test_a_config_pointing_at_no_database_is_an_error_not_an_empty_answer(
    start_daemon: Any, tmp_path: Path, cli: Any
) -> None:
    daemon = await start_daemon({"type": "memory"})
    wrong = tmp_path / "elsewhere.yaml"
    wrong.write_text(
        daemon.config_path.read_text().replace(
            "type: memory", f"path: {tmp_path / 'missing.db'}\n  type: sqlite"
        )
    )
    daemon.config_path = wrong
    result = await cli(daemon, "grants", "list")
    assert result.code == 1
    assert "no database at" in result.err
    assert not (tmp_path / "missing.db").exists()

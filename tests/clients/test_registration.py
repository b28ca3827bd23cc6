"""Dynamic client registration (RFC 7591) and management (RFC 7592) over real HTTP."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mcp_oauthd.storage.base import ClientKind
from tests.clients.conftest import (
    CLAUDE_CODE,
    CURSOR,
    INSPECTOR,
    PYTHON_SDK,
    VSCODE,
    WEB_APP,
    manage,
    register,
)
from tests.daemon import Daemon

INITIAL_TOKEN = "initial-access-token-0123456789"


async def metadata(daemon: Daemon) -> dict[str, Any]:
    async with daemon.http.get(daemon.url + "/.well-known/oauth-authorization-server") as resp:
        return dict(await resp.json())


# ----------------------------------------------------------------------------- happy paths
@pytest.mark.parametrize(
    "payload",
    [CLAUDE_CODE, VSCODE, CURSOR, INSPECTOR],
    ids=["claude", "vscode", "cursor", "inspector"],
)
async def test_public_mcp_clients_register_as_they_really_do(
    daemon: Daemon, payload: dict[str, Any]
) -> None:
    reply = await register(daemon, payload)
    assert reply.status == 201, reply.body
    body = reply.body
    assert reply.headers["Cache-Control"] == "no-store"
    assert body["redirect_uris"] == payload["redirect_uris"]
    assert body["token_endpoint_auth_method"] == "none"
    assert body["grant_types"] == ["authorization_code", "refresh_token"]
    assert body["response_types"] == ["code"]
    assert body["client_id_issued_at"] == int(daemon.clock.now())
    assert "client_secret" not in body
    assert body["registration_access_token"].startswith("mcprg_")
    assert body["registration_client_uri"] == (
        f"{daemon.config.issuer}/oauth/register/{body['client_id']}"
    )
    record = await daemon.storage.get_client(body["client_id"])
    assert record is not None
    assert record.kind is ClientKind.DYNAMIC
    assert record.is_public
    assert record.registered_ip == "127.0.0.1"
    assert record.client_name == payload["client_name"]
    [event] = daemon.events("registration")
    assert event["client_id"] == body["client_id"]
    assert event["public"] is True


@pytest.mark.parametrize("payload", [WEB_APP, PYTHON_SDK], ids=["web", "python-sdk"])
async def test_a_confidential_client_gets_a_generated_secret_stored_only_as_a_hash(
    daemon: Daemon, payload: dict[str, Any]
) -> None:
    reply = await register(daemon, payload)
    assert reply.status == 201, reply.body
    body = reply.body
    secret = body["client_secret"]
    assert secret.startswith("mcpcs_") and len(secret) >= 48
    assert body["client_secret_expires_at"] == 0
    assert body["token_endpoint_auth_method"] == payload["token_endpoint_auth_method"]
    record = await daemon.storage.get_client(body["client_id"])
    assert record is not None
    assert record.secret_hash is not None and record.secret_hash.startswith("sha256:")
    assert record.registration_access_token_hash is not None
    dump = repr(daemon.storage.__dict__) + json.dumps(list(daemon.auditor.events), default=str)
    assert secret not in dump
    assert body["registration_access_token"] not in dump


async def test_a_web_client_without_application_type_is_registered_as_web(
    daemon: Daemon,
) -> None:
    reply = await register(daemon, WEB_APP)
    assert reply.body["application_type"] == "web"
    reply = await register(daemon, VSCODE)
    assert reply.body["application_type"] == "native"


async def test_the_registration_endpoint_and_cimd_support_are_advertised(daemon: Daemon) -> None:
    meta = await metadata(daemon)
    assert meta["registration_endpoint"] == daemon.config.issuer + "/oauth/register"
    assert meta["client_id_metadata_document_supported"] is True
    assert "none" in meta["token_endpoint_auth_methods_supported"]


# ----------------------------------------------------------------------------- refusals
@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({**WEB_APP, "redirect_uris": ["javascript:alert(1)"]}, "invalid_redirect_uri"),
        ({**WEB_APP, "redirect_uris": ["https://app.example.com/cb#x"]}, "invalid_redirect_uri"),
        ({**WEB_APP, "redirect_uris": ["http://app.example.com/cb"]}, "invalid_redirect_uri"),
        ({"client_name": "No redirects"}, "invalid_redirect_uri"),
        ({**WEB_APP, "token_endpoint_auth_method": "private_key_jwt"}, "invalid_client_metadata"),
        ({**WEB_APP, "grant_types": ["client_credentials"]}, "invalid_client_metadata"),
        ({**WEB_APP, "response_types": ["token"]}, "invalid_client_metadata"),
        ({**CURSOR, "application_type": "web"}, "invalid_redirect_uri"),
        (["not", "an", "object"], "invalid_client_metadata"),
    ],
)
async def test_bad_metadata_is_refused_with_the_rfc7591_error_and_audited(
    daemon: Daemon, payload: Any, error: str
) -> None:
    reply = await register(daemon, payload)
    assert reply.status == 400
    assert reply.body["error"] == error
    assert reply.body["error_description"]
    [event] = daemon.events("registration.refused")
    assert event["error"] == error
    assert await daemon.storage.list_clients() == []


async def test_a_body_that_is_not_json_is_refused(daemon: Daemon) -> None:
    for data, content_type in (
        (b"{not json", "application/json"),
        (json.dumps(WEB_APP), "application/x-www-form-urlencoded"),
        (b"\xff\xfe", "application/json"),
    ):
        reply = await register(daemon, data, content_type=content_type)
        assert reply.status == 400
        assert reply.body["error"] == "invalid_client_metadata"
    assert len(daemon.events("registration.refused")) == 3


async def test_an_oversized_registration_request_is_refused(daemon: Daemon) -> None:
    reply = await register(daemon, {**WEB_APP, "software_statement": "x" * 20_000})
    assert reply.status == 400
    assert reply.body["error"] == "invalid_client_metadata"
    assert "too large" in reply.body["error_description"]


async def test_public_clients_can_be_refused_by_policy(daemon_factory: Any) -> None:
    daemon: Daemon = await daemon_factory(registration={"allow_public_clients": False})
    reply = await register(daemon, CLAUDE_CODE)
    assert reply.status == 400
    assert reply.body["error"] == "invalid_client_metadata"
    assert "public clients" in reply.body["error_description"]
    assert (await register(daemon, WEB_APP)).status == 201


# ----------------------------------------------------------------------------- policies
async def test_a_closed_server_refuses_registration_and_does_not_advertise_it(
    daemon_factory: Any,
) -> None:
    daemon: Daemon = await daemon_factory(registration={"policy": "closed"})
    reply = await register(daemon, CLAUDE_CODE)
    assert reply.status == 403
    assert reply.body["error"] == "access_denied"
    assert "registration_endpoint" not in await metadata(daemon)
    assert daemon.events("registration.refused")
    assert await daemon.storage.list_clients() == []


async def test_the_token_policy_needs_the_initial_access_token(daemon_factory: Any) -> None:
    daemon: Daemon = await daemon_factory(
        registration={"policy": "token", "initial_access_token": INITIAL_TOKEN}
    )
    assert (await metadata(daemon))["registration_endpoint"].endswith("/oauth/register")
    for token in (None, "wrong-token-wrong-token-wrong", INITIAL_TOKEN + "x"):
        reply = await register(daemon, CLAUDE_CODE, token=token)
        assert reply.status == 401
        assert reply.body["error"] == "invalid_token"
        assert reply.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert len(daemon.events("registration.refused")) == 3
    reply = await register(daemon, CLAUDE_CODE, token=INITIAL_TOKEN)
    assert reply.status == 201
    events = json.dumps(list(daemon.auditor.events), default=str)
    assert INITIAL_TOKEN not in events


# ----------------------------------------------------------------------------- RFC 7592
async def test_a_client_reads_its_registration_with_its_token(daemon: Daemon) -> None:
    created = (await register(daemon, WEB_APP)).body
    reply = await manage(
        daemon, "GET", created["registration_client_uri"], created["registration_access_token"]
    )
    assert reply.status == 200
    assert reply.headers["Cache-Control"] == "no-store"
    body = reply.body
    assert body["client_id"] == created["client_id"]
    assert body["redirect_uris"] == WEB_APP["redirect_uris"]
    assert body["client_name"] == "Hosted Agent"
    assert body["client_id_issued_at"] == created["client_id_issued_at"]
    assert body["registration_client_uri"] == created["registration_client_uri"]
    assert "client_secret" not in body  # stored only as a hash
    assert "registration_access_token" not in body


async def test_management_without_the_right_token_is_invalid_token(daemon: Daemon) -> None:
    mine = (await register(daemon, WEB_APP)).body
    theirs = (await register(daemon, {**WEB_APP, "client_name": "Other"})).body
    uri = mine["registration_client_uri"]
    for method in ("GET", "DELETE"):
        for token in (
            None,
            "mcprg_wrong",
            theirs["registration_access_token"],
            mine["client_secret"],
        ):
            reply = await manage(daemon, method, uri, token)
            assert reply.status == 401, (method, token)
            assert reply.body["error"] == "invalid_token"
            assert reply.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert await daemon.storage.get_client(mine["client_id"]) is not None
    assert len(daemon.events("registration.management.refused")) == 8


async def test_unknown_and_static_clients_cannot_be_managed(daemon: Daemon) -> None:
    token = (await register(daemon, WEB_APP)).body["registration_access_token"]
    for client_id in ("no-such-client", "cli", "webapp", "x" * 600):
        reply = await manage(daemon, "GET", f"{daemon.url}/oauth/register/{client_id}", token)
        assert reply.status == 401
        assert reply.body["error"] == "invalid_token"


async def test_a_client_deletes_itself_with_its_token(daemon: Daemon) -> None:
    created = (await register(daemon, WEB_APP)).body
    uri, token = created["registration_client_uri"], created["registration_access_token"]
    reply = await manage(daemon, "DELETE", uri, token)
    assert reply.status == 204
    assert await daemon.storage.get_client(created["client_id"]) is None
    assert daemon.events("registration.deleted")[0]["client_id"] == created["client_id"]
    assert (await manage(daemon, "GET", uri, token)).status == 401
    assert (await manage(daemon, "DELETE", uri, token)).status == 401

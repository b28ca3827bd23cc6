"""RFC 7662 introspection as MCP servers use it: authenticated, audience-bound, one lookup."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from mcp_oauthd.storage.memory import MemoryStorage
from tests.resource.conftest import FILES, MAIL, SECRETS, WEBAPP_SECRET, RsDaemon

pytestmark = pytest.mark.asyncio


class CountingStorage(MemoryStorage):
    def __init__(self) -> None:
        super().__init__()
        self.access_lookups = 0
        self.grant_lookups = 0

    async def get_access_token(self, token_hash: str):  # type: ignore[no-untyped-def]
        self.access_lookups += 1
        return MemoryStorage.get_access_token_now(self, token_hash)

    def get_access_token_now(self, token_hash: str):  # type: ignore[no-untyped-def]
        self.access_lookups += 1  # the hot path's synchronous lookup is a lookup too
        return super().get_access_token_now(token_hash)

    async def get_grant(self, grant_id: str):  # type: ignore[no-untyped-def]
        self.grant_lookups += 1
        return await super().get_grant(grant_id)


async def test_an_active_token_introspects_with_every_claim(rs: RsDaemon) -> None:
    tokens = await rs.tokens(scope="files:read files:write")
    status, body, headers = await rs.introspect(tokens["access_token"])
    assert status == 200
    assert headers["Cache-Control"] == "no-store"
    now = int(rs.clock.now())
    assert body == {
        "active": True,
        "scope": "files:read files:write",
        "client_id": "cli",
        "token_type": "Bearer",
        "exp": now + 3600,
        "iat": now,
        "nbf": now,
        "sub": body["sub"],
        "username": "alice",
        "email": "alice@example.com",
        "aud": FILES,
        "iss": rs.config.issuer,
        "jti": body["jti"],
    }
    assert body["sub"] and body["jti"]


async def test_introspection_is_advertised_in_the_metadata(rs: RsDaemon) -> None:
    async with rs.http.get(rs.url + "/.well-known/oauth-authorization-server") as resp:
        meta = await resp.json()
    assert meta["introspection_endpoint"] == rs.config.issuer + "/oauth/introspect"
    assert "urn:ietf:params:oauth:grant-type:token-exchange" in meta["grant_types_supported"]


async def test_an_expired_token_is_inactive(rs: RsDaemon) -> None:
    tokens = await rs.tokens()
    rs.clock.advance(3599)
    assert (await rs.introspect(tokens["access_token"]))[1]["active"] is True
    rs.clock.advance(1)
    assert (await rs.introspect(tokens["access_token"]))[1] == {"active": False}


async def test_a_revoked_access_token_is_inactive(rs: RsDaemon) -> None:
    tokens = await rs.tokens()
    async with rs.http.post(
        rs.url + "/oauth/revoke", data={"token": tokens["access_token"], "client_id": "cli"}
    ) as resp:
        assert resp.status == 200
    assert (await rs.introspect(tokens["access_token"]))[1] == {"active": False}


async def test_revoking_the_grant_makes_its_access_token_inactive(rs: RsDaemon) -> None:
    tokens = await rs.tokens()
    async with rs.http.post(
        rs.url + "/oauth/revoke", data={"token": tokens["refresh_token"], "client_id": "cli"}
    ) as resp:
        assert resp.status == 200
    assert (await rs.introspect(tokens["access_token"]))[1] == {"active": False}


async def test_a_resource_server_sees_only_tokens_for_its_own_resource(rs: RsDaemon) -> None:
    mail = await rs.tokens(resource=MAIL, scope="mail")
    files = await rs.tokens()
    assert (await rs.introspect(mail["access_token"], rs="files-rs"))[1] == {"active": False}
    assert (await rs.introspect(files["access_token"], rs="mail-rs"))[1] == {"active": False}
    status, body, _ = await rs.introspect(mail["access_token"], rs="mail-rs")
    assert (status, body["active"], body["aud"]) == (200, True, MAIL)


async def test_a_refresh_token_never_introspects_as_active(rs: RsDaemon) -> None:
    tokens = await rs.tokens()
    for hint in ("refresh_token", "access_token"):
        status, body, _ = await rs.introspect(tokens["refresh_token"], token_type_hint=hint)
        assert (status, body) == (200, {"active": False})


async def test_garbage_is_inactive_and_costs_no_storage_lookup(rs_factory: object) -> None:
    storage = CountingStorage()
    rs: RsDaemon = await rs_factory(storage=storage)  # type: ignore[operator]
    for garbage in (
        "",
        "x",
        "Bearer abc",
        "ya29.an-upstream-google-token",
        "ünïcødé",
        "a" * 10_000,
    ):
        assert (await rs.introspect(garbage))[1] == {"active": False}
    assert storage.access_lookups == 0


async def test_an_active_token_costs_exactly_one_storage_lookup(rs_factory: object) -> None:
    storage = CountingStorage()
    rs: RsDaemon = await rs_factory(storage=storage)  # type: ignore[operator]
    tokens = await rs.tokens()
    before = (storage.access_lookups, storage.grant_lookups)
    assert (await rs.introspect(tokens["access_token"]))[1]["active"] is True
    assert (storage.access_lookups, storage.grant_lookups) == (before[0] + 1, before[1])


async def test_an_unknown_access_token_is_inactive(rs: RsDaemon) -> None:
    status, body, _ = await rs.introspect("mcpat_" + "A" * 43)
    assert (status, body) == (200, {"active": False})


@pytest.mark.parametrize(
    "auth",
    [
        None,
        aiohttp.BasicAuth("files-rs", "wrong-secret"),
        aiohttp.BasicAuth("nobody", SECRETS["files-rs"]),
        aiohttp.BasicAuth("webapp", WEBAPP_SECRET),  # an OAuth client, not an RS
        aiohttp.BasicAuth("cli", ""),
    ],
)
async def test_an_unauthenticated_caller_gets_401_and_learns_nothing(
    rs: RsDaemon, auth: aiohttp.BasicAuth | None
) -> None:
    tokens = await rs.tokens()
    answers = []
    for token in (tokens["access_token"], "garbage"):
        async with rs.http.post(
            rs.url + "/oauth/introspect", data={"token": token}, auth=auth
        ) as resp:
            answers.append((resp.status, await resp.json(), resp.headers["WWW-Authenticate"]))
    assert answers[0] == answers[1]
    status, body, challenge = answers[0]
    assert status == 401
    assert body["error"] == "invalid_client"
    assert challenge.startswith("Basic ")
    assert "active" not in body


async def test_client_secret_post_authenticates_a_resource_server_too(rs: RsDaemon) -> None:
    tokens = await rs.tokens()
    data = {
        "token": tokens["access_token"],
        "client_id": "files-rs",
        "client_secret": SECRETS["files-rs"],
    }
    async with rs.http.post(rs.url + "/oauth/introspect", data=data) as resp:
        assert resp.status == 200
        assert (await resp.json())["active"] is True


async def test_a_refused_introspection_caller_is_audited_without_its_secret(
    rs: RsDaemon,
) -> None:
    await rs.introspect("whatever", rs=None)
    async with rs.http.post(
        rs.url + "/oauth/introspect",
        data={"token": "x"},
        auth=aiohttp.BasicAuth("files-rs", "guess"),
    ) as resp:
        assert resp.status == 401
    events = rs.events("introspection.refused")
    assert [e["client_id"] for e in events][-1] == "files-rs"
    assert "guess" not in repr(events)


async def test_introspection_without_a_token_parameter_is_invalid_request(rs: RsDaemon) -> None:
    auth = aiohttp.BasicAuth("files-rs", SECRETS["files-rs"])
    async with rs.http.post(rs.url + "/oauth/introspect", data={"x": "1"}, auth=auth) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"] == "invalid_request"


async def test_introspection_refuses_a_repeated_token_parameter(rs: RsDaemon) -> None:
    tokens = await rs.tokens(scope="files:read")
    body = f"token={tokens['access_token']}&token=other".encode()
    basic = aiohttp.BasicAuth("files-rs", SECRETS["files-rs"]).encode()
    status, answer = await _post_form(
        rs.http, rs.url + "/oauth/introspect", body, Authorization=basic
    )
    assert (status, answer["error"]) == (400, "invalid_request")
    status, answer = await _post_form(
        rs.http,
        rs.url + "/oauth/introspect",
        f"token={tokens['access_token']}".encode(),
        Authorization=basic,
    )
    assert (status, answer["active"]) == (200, True)


async def _post_form(http: aiohttp.ClientSession, url: str, body: bytes, **headers: str) -> Any:
    headers = {"Content-Type": "application/x-www-form-urlencoded", **headers}
    async with http.post(url, data=body, headers=headers) as resp:
        return resp.status, await resp.json()

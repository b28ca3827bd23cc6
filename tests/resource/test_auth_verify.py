"""/auth/verify, the nginx auth_request target: identity headers on 200, and on 401/403
the exact challenge nginx hands back to the client (RFC 6750 §3, RFC 9728 §5.1)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.resource.conftest import FILES, MAIL, RsDaemon, resources

pytestmark = pytest.mark.asyncio

FILES_PRM = "http://127.0.0.1:9999/.well-known/oauth-protected-resource/mcp"


def challenge(headers: object) -> dict[str, str]:
    value = headers["WWW-Authenticate"]  # type: ignore[index]
    assert value.startswith("Bearer ")
    return dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', value))


async def test_a_valid_token_passes_with_the_identity_headers(rs: RsDaemon) -> None:
    tokens = await rs.tokens(scope="files:read files:write")
    status, headers = await rs.verify(tokens["access_token"], scope="files:read")
    assert status == 200
    assert headers["X-Auth-Subject"]
    assert headers["X-Auth-Email"] == "alice@example.com"
    assert headers["X-Auth-Username"] == "alice"
    assert headers["X-Auth-Scopes"] == "files:read files:write"
    assert headers["X-Auth-Client-Id"] == "cli"
    assert headers["Cache-Control"] == "no-store"


async def test_a_request_without_a_token_gets_the_discovery_challenge(rs: RsDaemon) -> None:
    status, headers = await rs.verify(None)
    assert status == 401
    # RFC 6750 §3.1: no error code when the request carried no credentials at all.
    assert challenge(headers) == {"resource_metadata": FILES_PRM, "scope": "files:read"}
    assert headers["WWW-Authenticate"].startswith('Bearer resource_metadata="')


async def test_an_expired_token_is_invalid_token(rs: RsDaemon) -> None:
    tokens = await rs.tokens()
    rs.clock.advance(3600)
    status, headers = await rs.verify(tokens["access_token"])
    assert status == 401
    found = challenge(headers)
    assert found["error"] == "invalid_token"
    assert found["resource_metadata"] == FILES_PRM
    assert found["scope"] == "files:read"


async def test_a_revoked_token_is_invalid_token(rs: RsDaemon) -> None:
    tokens = await rs.tokens()
    assert (await rs.verify(tokens["access_token"]))[0] == 200
    async with rs.http.post(
        rs.url + "/oauth/revoke", data={"token": tokens["refresh_token"], "client_id": "cli"}
    ) as resp:
        assert resp.status == 200
    status, headers = await rs.verify(tokens["access_token"])
    assert (status, challenge(headers)["error"]) == (401, "invalid_token")


async def test_a_token_for_another_resource_is_refused(rs: RsDaemon) -> None:
    mail = await rs.tokens(resource=MAIL, scope="mail")
    status, headers = await rs.verify(mail["access_token"], resource=FILES)
    assert (status, challenge(headers)["error"]) == (401, "invalid_token")
    assert (await rs.verify(mail["access_token"], resource=MAIL))[0] == 200


async def test_a_refresh_token_is_not_a_bearer(rs: RsDaemon) -> None:
    tokens = await rs.tokens()
    status, headers = await rs.verify(tokens["refresh_token"])
    assert (status, challenge(headers)["error"]) == (401, "invalid_token")


@pytest.mark.parametrize(
    ("token", "scheme"),
    [
        ("garbage", "Bearer"),
        ("mcpat_" + "x" * 43, "Bearer"),
        ("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "Bearer"),
        ("a b c", "Bearer"),
        ("dXNlcjpwYXNz", "Basic"),
    ],
)
async def test_garbage_and_other_schemes_are_invalid_token(
    rs: RsDaemon, token: str, scheme: str
) -> None:
    status, headers = await rs.verify(token, scheme=scheme)
    assert status == 401
    assert challenge(headers)["resource_metadata"] == FILES_PRM


async def test_a_missing_scope_is_403_insufficient_scope(rs: RsDaemon) -> None:
    tokens = await rs.tokens()  # the default scope: files:read
    status, headers = await rs.verify(tokens["access_token"], scope="files:write")
    assert status == 403
    found = challenge(headers)
    assert found["error"] == "insufficient_scope"
    assert found["scope"] == "files:read files:write"
    assert found["resource_metadata"] == FILES_PRM


async def test_path_scopes_from_the_config_apply_by_longest_prefix(rs: RsDaemon) -> None:
    tokens = await rs.tokens()
    token = tokens["access_token"]
    assert (await rs.verify(token, original_uri="/mcp"))[0] == 200
    assert (await rs.verify(token, original_uri="/mcp/administrator?x=1"))[0] == 200
    status, headers = await rs.verify(token, original_uri="/mcp/admin/tools?x=1")
    assert (status, challenge(headers)["error"]) == (403, "insufficient_scope")
    writer = await rs.tokens(scope="files:read files:write")
    assert (await rs.verify(writer["access_token"], original_uri="/mcp/admin/tools"))[0] == 200


async def test_the_resource_and_scope_may_come_as_query_arguments(rs: RsDaemon) -> None:
    mail = await rs.tokens(resource=MAIL, scope="mail")
    url = rs.url + "/auth/verify"
    headers = {"Authorization": f"Bearer {mail['access_token']}"}
    async with rs.http.get(url, params={"resource": MAIL, "scope": "mail"}, headers=headers) as r:
        assert r.status == 200
    async with rs.http.get(url, params={"resource": FILES}, headers=headers) as r:
        assert r.status == 401


async def test_an_unknown_resource_or_scope_is_a_loud_request_error(rs: RsDaemon) -> None:
    # 400, which nginx turns into a 500 for the client; not a 5xx anyone could provoke
    # here (found by schemathesis, tests/security/test_openapi.py).
    tokens = await rs.tokens()
    status, _ = await rs.verify(tokens["access_token"], resource="https://nowhere.example/mcp")
    assert status == 400
    status, _ = await rs.verify(tokens["access_token"], scope="no-such-scope")
    assert status == 400


async def test_with_several_resources_nginx_must_name_one(rs: RsDaemon) -> None:
    tokens = await rs.tokens()
    assert (await rs.verify(tokens["access_token"], resource=None))[0] == 400


async def test_with_a_single_resource_naming_it_is_optional(rs_factory: Any) -> None:
    daemon: RsDaemon = await rs_factory(resources=resources()[:1])
    tokens = await daemon.tokens()
    assert (await daemon.verify(tokens["access_token"], resource=None))[0] == 200
    assert (await daemon.verify(None, resource=None))[0] == 401


async def test_path_scopes_also_read_ingress_nginx_x_original_url(rs: RsDaemon) -> None:
    """ingress-nginx sends the protected request as an absolute X-Original-URL."""
    token = (await rs.tokens())["access_token"]
    url = rs.url + "/auth/verify"
    headers = {
        "Authorization": f"Bearer {token}",
        "X-Auth-Resource": FILES,
        "X-Original-URL": "https://files.example.com/mcp/admin/tools?x=1",
    }
    async with rs.http.get(url, headers=headers) as resp:
        assert resp.status == 403
    headers["X-Original-URL"] = "https://files.example.com/mcp/tools"
    async with rs.http.get(url, headers=headers) as resp:
        assert resp.status == 200

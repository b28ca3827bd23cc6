"""RFC 8693 token exchange: an MCP server obtains the user's current upstream token."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from mcp_oauthd.http import keys
from mcp_oauthd.oauth.tokens import token_hash
from mcp_oauthd.testing.fake_idp import FakeOidcProvider
from tests.resource.conftest import (
    ACCESS_TOKEN_TYPE,
    EXCHANGE_GRANT,
    MAIL,
    WEBAPP_SECRET,
    RsDaemon,
    oidc_provider,
)

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def idp() -> AsyncIterator[FakeOidcProvider]:
    async with FakeOidcProvider() as fake:
        yield fake


@pytest.fixture
async def ors(rs_factory: Any, idp: FakeOidcProvider) -> RsDaemon:
    daemon: RsDaemon = await rs_factory(provider=oidc_provider(idp))
    idp.clock = daemon.clock  # ID tokens must be fresh on the daemon's fake clock
    return daemon


def refreshes(idp: FakeOidcProvider) -> int:
    return sum(1 for r in idp.token_requests if r.form.get("grant_type") == "refresh_token")


async def userinfo_status(idp: FakeOidcProvider, upstream_token: str) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            idp.url + "/userinfo", headers={"Authorization": f"Bearer {upstream_token}"}
        ) as resp,
    ):
        return resp.status


async def test_an_allowed_resource_server_gets_the_users_upstream_token(
    ors: RsDaemon, idp: FakeOidcProvider
) -> None:
    tokens = await ors.tokens()
    status, body = await ors.exchange(tokens["access_token"])
    assert status == 200, body
    assert body["issued_token_type"] == ACCESS_TOKEN_TYPE
    assert body["token_type"] == "Bearer"
    assert body["access_token"].startswith("fake-at-")
    assert body["expires_in"] == 3600
    assert "refresh_token" not in body
    assert await userinfo_status(idp, body["access_token"]) == 200
    assert refreshes(idp) == 0  # far from expiry: no upstream call
    assert ors.events("token.exchanged")
    assert body["access_token"] not in repr(list(ors.auditor.events))


async def test_a_token_near_expiry_is_refreshed_upstream_first(
    ors: RsDaemon, idp: FakeOidcProvider
) -> None:
    tokens = await ors.tokens()
    _, first = await ors.exchange(tokens["access_token"])
    ors.clock.advance(3600 - 299)  # inside the 300 s token_refresh_threshold
    status, second = await ors.exchange(tokens["access_token"])
    assert status == 200, second
    assert refreshes(idp) == 1
    assert second["access_token"] != first["access_token"]
    assert second["expires_in"] == 3600
    assert await userinfo_status(idp, second["access_token"]) == 200
    # Stored (encrypted) for the next exchange: no second upstream call.
    _, third = await ors.exchange(tokens["access_token"])
    assert (third["access_token"], refreshes(idp)) == (second["access_token"], 1)


async def test_concurrent_exchanges_near_expiry_refresh_upstream_once(
    ors: RsDaemon, idp: FakeOidcProvider
) -> None:
    idp.rotate_refresh_tokens = True  # a second refresh would present a spent token
    tokens = await ors.tokens()
    ors.clock.advance(3500)
    results = await asyncio.gather(*(ors.exchange(tokens["access_token"]) for _ in range(5)))
    assert {status for status, _ in results} == {200}
    assert len({body["access_token"] for _, body in results}) == 1
    assert refreshes(idp) == 1
    assert len(ors.app[keys.SERVICES].upstream_locks) == 0  # no lock outlives its use


async def test_a_dead_upstream_grant_is_invalid_grant_and_ends_ours(
    ors: RsDaemon, idp: FakeOidcProvider
) -> None:
    tokens = await ors.tokens()
    idp.refresh_invalid_grant = True
    ors.clock.advance(3500)
    status, body = await ors.exchange(tokens["access_token"])
    assert (status, body["error"]) == (400, "invalid_grant")
    assert "sign in again" in body["error_description"]
    record = await ors.storage.get_access_token(token_hash(tokens["access_token"]))
    assert record is None
    grants = await ors.storage.list_grants()
    assert grants == []
    assert (await ors.introspect(tokens["access_token"]))[1] == {"active": False}
    assert ors.events("grant.revoked")[-1]["reason"] == "upstream_invalid_grant"
    status, body, _ = await ors.token(
        {
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": "cli",
        }
    )
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_an_unreachable_idp_is_a_503_and_keeps_the_grant(
    ors: RsDaemon, idp: FakeOidcProvider
) -> None:
    tokens = await ors.tokens()
    idp.fail_with_500 = True
    ors.clock.advance(3500)
    status, body = await ors.exchange(tokens["access_token"])
    assert (status, body["error"]) == (503, "temporarily_unavailable")
    idp.fail_with_500 = False
    status, body = await ors.exchange(tokens["access_token"])
    assert status == 200, body


async def test_the_refresh_grant_still_checks_upstream_liveness(
    ors: RsDaemon, idp: FakeOidcProvider
) -> None:
    tokens = await ors.tokens()
    ors.clock.advance(3500)
    status, body, _ = await ors.token(
        {
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": "cli",
        }
    )
    assert status == 200, body
    assert refreshes(idp) == 1
    # The exchange then finds the renewed upstream token stored: no second refresh.
    _, exchanged = await ors.exchange(body["access_token"])
    assert exchanged["expires_in"] == 3600
    assert refreshes(idp) == 1


async def test_a_resource_without_allow_upstream_token_is_unauthorized(ors: RsDaemon) -> None:
    mail = await ors.tokens(resource=MAIL, scope="mail")
    status, body = await ors.exchange(mail["access_token"], rs="mail-rs")
    assert (status, body["error"]) == (400, "unauthorized_client")


async def test_a_token_for_another_resource_cannot_be_exchanged(ors: RsDaemon) -> None:
    mail = await ors.tokens(resource=MAIL, scope="mail")
    status, body = await ors.exchange(mail["access_token"], rs="files-rs")
    assert (status, body["error"]) == (400, "invalid_request")


@pytest.mark.parametrize(
    "subject", ["garbage", "refresh", "expired", "revoked"], ids=lambda s: f"{s}-subject"
)
async def test_only_an_active_access_token_can_be_exchanged(ors: RsDaemon, subject: str) -> None:
    tokens = await ors.tokens()
    token = tokens["access_token"]
    if subject == "garbage":
        token = "mcpat_nonsense"
    elif subject == "refresh":
        token = tokens["refresh_token"]
    elif subject == "expired":
        ors.clock.advance(3600)
    else:
        async with ors.http.post(
            ors.url + "/oauth/revoke", data={"token": token, "client_id": "cli"}
        ) as resp:
            assert resp.status == 200
    status, body = await ors.exchange(token)
    assert (status, body["error"]) == (400, "invalid_request")


async def test_an_oauth_client_cannot_use_token_exchange(ors: RsDaemon) -> None:
    tokens = await ors.tokens()
    data = {
        "grant_type": EXCHANGE_GRANT,
        "subject_token": tokens["access_token"],
        "subject_token_type": ACCESS_TOKEN_TYPE,
    }
    for auth in (aiohttp.BasicAuth("webapp", WEBAPP_SECRET), None):
        form = dict(data) if auth else {**data, "client_id": "cli"}
        async with ors.http.post(ors.url + "/oauth/token", data=form, auth=auth) as resp:
            assert resp.status == 401
            assert (await resp.json())["error"] == "invalid_client"
            assert resp.headers["WWW-Authenticate"].startswith("Basic ")


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        ({"subject_token_type": "urn:ietf:params:oauth:token-type:id_token"}, "invalid_request"),
        ({"requested_token_type": "urn:ietf:params:oauth:token-type:jwt"}, "invalid_request"),
        ({"actor_token": "x", "actor_token_type": ACCESS_TOKEN_TYPE}, "invalid_request"),
        ({"audience": "https://gmail.googleapis.com"}, "invalid_target"),
        ({"scope": "email"}, "invalid_scope"),
    ],
)
async def test_unsupported_exchange_parameters_are_refused(
    ors: RsDaemon, extra: dict[str, str], error: str
) -> None:
    tokens = await ors.tokens()
    status, body = await ors.exchange(tokens["access_token"], **extra)
    assert (status, body["error"]) == (400, error)


async def test_an_upstream_token_is_never_accepted_as_a_bearer(ors: RsDaemon) -> None:
    tokens = await ors.tokens()
    _, body = await ors.exchange(tokens["access_token"])
    upstream = body["access_token"]
    assert (await ors.introspect(upstream))[1] == {"active": False}
    assert (await ors.verify(upstream))[0] == 401
    status, body = await ors.exchange(upstream)
    assert (status, body["error"]) == (400, "invalid_request")


async def test_a_local_sign_in_has_no_upstream_token_to_give(rs: RsDaemon) -> None:
    tokens = await rs.tokens()
    status, body = await rs.exchange(tokens["access_token"])
    assert (status, body["error"]) == (400, "invalid_request")
    assert "no upstream token" in body["error_description"]

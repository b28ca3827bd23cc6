"""The login flow through real upstream protocols (fake OIDC IdP and fake GitHub over HTTP),
and upstream liveness on refresh (DESIGN §1)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from mcp_oauthd.oauth.tokens import token_hash
from mcp_oauthd.testing.browser import query_of
from mcp_oauthd.testing.fake_idp import FakeGitHub, FakeOidcProvider
from tests.flows.conftest import Daemon


@pytest.fixture
async def idp() -> AsyncIterator[FakeOidcProvider]:
    async with FakeOidcProvider() as fake:
        yield fake


async def oidc_daemon(daemon_factory: Any, idp: FakeOidcProvider, **overrides: Any) -> Daemon:
    daemon: Daemon = await daemon_factory(
        provider={
            "type": "oidc",
            "issuer": idp.issuer,
            "client_id": idp.client_id,
            "client_secret": idp.client_secret,
            "allow_insecure_http": True,
        },
        **overrides,
    )
    idp.clock = daemon.clock
    return daemon


async def refresh(daemon: Daemon, token: str) -> tuple[int, Any, Any]:
    result: tuple[int, Any, Any] = await daemon.token(
        {"grant_type": "refresh_token", "refresh_token": token, "client_id": "cli"}
    )
    return result


async def test_an_oidc_login_issues_our_own_tokens(
    daemon_factory: Any, idp: FakeOidcProvider
) -> None:
    daemon = await oidc_daemon(daemon_factory, idp)
    body = await daemon.tokens()
    record = await daemon.storage.get_access_token(token_hash(body["access_token"]))
    assert record is not None
    assert record.subject == "oidc:user-123"
    assert record.email == "alice@example.com"
    # Our tokens, not the upstream's.
    assert body["access_token"].startswith("mcpat_")


async def test_the_upstream_sees_our_state_pkce_and_nonce_but_never_the_resource(
    daemon_factory: Any, idp: FakeOidcProvider
) -> None:
    daemon = await oidc_daemon(daemon_factory, idp)
    await daemon.tokens(resource="https://mail.example.com/mcp")
    params = idp.authorize_params[-1]
    assert "resource" not in params
    assert params["code_challenge_method"] == "S256"
    assert params["nonce"]
    assert params["state"] != "client-state-123"
    assert params["redirect_uri"] == daemon.config.issuer + "/oauth/callback"


async def test_an_upstream_denial_returns_access_denied_to_the_client(
    daemon_factory: Any, idp: FakeOidcProvider
) -> None:
    daemon = await oidc_daemon(daemon_factory, idp)
    idp.deny = True
    hop, _ = await daemon.login()
    assert hop.location is not None
    query = query_of(hop.location)
    assert query["error"] == "access_denied"
    assert query["state"] == "client-state-123"
    assert daemon.events("login.upstream_error")


async def test_an_upstream_outage_is_temporarily_unavailable_at_the_client(
    daemon_factory: Any, idp: FakeOidcProvider
) -> None:
    daemon = await oidc_daemon(daemon_factory, idp)
    idp.fail_paths = {"/token"}
    hop, _ = await daemon.login()
    assert hop.location is not None
    assert query_of(hop.location)["error"] == "temporarily_unavailable"


async def test_a_forged_id_token_is_a_server_error_at_the_client(
    daemon_factory: Any, idp: FakeOidcProvider
) -> None:
    daemon = await oidc_daemon(daemon_factory, idp)
    idp.wrong_nonce = True
    hop, _ = await daemon.login()
    assert hop.location is not None
    assert query_of(hop.location)["error"] == "server_error"


async def test_a_refresh_renews_an_upstream_token_near_expiry(
    daemon_factory: Any, idp: FakeOidcProvider
) -> None:
    daemon = await oidc_daemon(daemon_factory, idp)
    idp.expires_in = 600
    first = await daemon.tokens()
    before = len(idp.token_requests)
    daemon.clock.advance(400)  # the upstream token is now within the 300 s threshold
    status, body, _ = await refresh(daemon, first["refresh_token"])
    assert status == 200, body
    assert len(idp.token_requests) == before + 1
    assert idp.token_requests[-1].form["grant_type"] == "refresh_token"


async def test_a_dead_upstream_grant_ends_ours_on_refresh(
    daemon_factory: Any, idp: FakeOidcProvider
) -> None:
    daemon = await oidc_daemon(daemon_factory, idp)
    idp.expires_in = 60
    first = await daemon.tokens()
    idp.refresh_invalid_grant = True
    status, body, _ = await refresh(daemon, first["refresh_token"])
    assert (status, body["error"]) == (400, "invalid_grant")
    assert await daemon.storage.get_access_token(token_hash(first["access_token"])) is None
    assert daemon.events("grant.revoked")


async def test_a_flaky_upstream_during_refresh_is_a_503_and_loses_nothing(
    daemon_factory: Any, idp: FakeOidcProvider
) -> None:
    daemon = await oidc_daemon(daemon_factory, idp)
    idp.expires_in = 60
    first = await daemon.tokens()
    idp.fail_paths = {"/token"}
    status, body, headers = await refresh(daemon, first["refresh_token"])
    assert (status, body["error"]) == (503, "temporarily_unavailable")
    assert headers["Retry-After"]
    idp.fail_paths = set()
    status, body, _ = await refresh(daemon, first["refresh_token"])
    assert status == 200, body


async def test_upstream_tokens_are_stored_encrypted(
    daemon_factory: Any, idp: FakeOidcProvider
) -> None:
    daemon = await oidc_daemon(daemon_factory, idp)
    await daemon.tokens()
    grant = (await daemon.storage.list_grants())[0]
    assert grant.upstream is not None and grant.upstream.startswith("v1.")
    assert "access_token" not in grant.upstream
    assert "user-123" not in grant.upstream


@pytest.fixture
async def github() -> AsyncIterator[FakeGitHub]:
    async with FakeGitHub() as fake:
        yield fake


async def github_daemon(daemon_factory: Any, github: FakeGitHub, **overrides: Any) -> Daemon:
    daemon: Daemon = await daemon_factory(
        provider={
            "type": "github",
            "client_id": github.client_id,
            "client_secret": github.client_secret,
            "base_url": github.base_url,
            "api_url": github.api_url,
            "allow_insecure_http": True,
        },
        **overrides,
    )
    return daemon


async def test_a_github_login_uses_the_primary_verified_email(
    daemon_factory: Any, github: FakeGitHub
) -> None:
    daemon = await github_daemon(daemon_factory, github)
    body = await daemon.tokens()
    record = await daemon.storage.get_access_token(token_hash(body["access_token"]))
    assert record is not None
    assert record.subject == "github:4242"
    assert record.email == "octocat@example.com"


async def test_github_organisation_membership_gates_access(
    daemon_factory: Any, github: FakeGitHub
) -> None:
    daemon = await github_daemon(
        daemon_factory, github, access_policy={"allowed_github_orgs": ["ACME"]}
    )
    assert (await daemon.tokens())["access_token"]
    github.user.orgs = ["elsewhere"]
    hop, _ = await daemon.login()
    assert hop.status == 403
    assert daemon.events("login.refused")

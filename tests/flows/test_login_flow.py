"""The login flow end to end over real HTTP: authorize, consent, login, callback, token."""

from __future__ import annotations

import asyncio

import aiohttp

from mcp_oauthd.oauth.pkce import new_pair
from mcp_oauthd.testing.browser import form_fields, query_of
from tests.flows.conftest import Daemon


async def test_a_user_logs_in_consents_and_the_client_gets_tokens(daemon: Daemon) -> None:
    body = await daemon.tokens()
    assert body["access_token"].startswith("mcpat_")
    assert body["refresh_token"].startswith("mcprt_")
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "files:read"
    assert body["expires_in"] == 3600
    assert daemon.events("token.issued")


async def test_the_client_redirect_carries_code_state_and_the_exact_issuer(daemon: Daemon) -> None:
    hop, _ = await daemon.login()
    assert hop.status == 302
    assert hop.location is not None
    query = query_of(hop.location)
    assert query["state"] == "client-state-123"
    assert query["iss"] == daemon.config.issuer
    assert hop.location.startswith("http://127.0.0.1:5555/callback?")


async def test_the_token_response_is_never_cached(daemon: Daemon) -> None:
    code, verifier = await daemon.code()
    status, _, headers = await daemon.token(
        {
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "client_id": "cli",
        }
    )
    assert status == 200
    assert headers["Cache-Control"] == "no-store"


async def test_tokens_are_stored_only_as_hashes(daemon: Daemon) -> None:
    body = await daemon.tokens()
    dump = repr(daemon.storage.__dict__)
    assert body["access_token"] not in dump
    assert body["refresh_token"] not in dump


async def test_a_denied_consent_returns_access_denied_to_the_client(daemon: Daemon) -> None:
    hop, _ = await daemon.login(approve=False)
    assert hop.location is not None
    query = query_of(hop.location)
    assert query["error"] == "access_denied"
    assert query["state"] == "client-state-123"
    assert query["iss"] == daemon.config.issuer


async def test_a_wrong_password_shows_the_form_again_and_is_audited(daemon: Daemon) -> None:
    hop, _ = await daemon.login(password="wrong")
    assert hop.status == 401
    assert "Wrong username or password" in hop.text
    assert daemon.events("login.failed")


async def test_a_confidential_client_authenticates_with_basic_and_post(daemon: Daemon) -> None:
    for use_basic in (True, False):
        code, verifier = await daemon.code(
            client_id="webapp", redirect_uri="https://app.example.com/cb"
        )
        data = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier}
        auth = None
        if use_basic:
            auth = aiohttp.BasicAuth("webapp", "s3cret-s3cret-s3cret")
        else:
            data.update(client_id="webapp", client_secret="s3cret-s3cret-s3cret")
        status, body, _ = await daemon.token(data, auth=auth)
        assert status == 200, body


async def test_a_confidential_client_with_a_wrong_secret_is_invalid_client(daemon: Daemon) -> None:
    code, verifier = await daemon.code(
        client_id="webapp", redirect_uri="https://app.example.com/cb"
    )
    status, body, headers = await daemon.token(
        {"grant_type": "authorization_code", "code": code, "code_verifier": verifier},
        auth=aiohttp.BasicAuth("webapp", "wrong"),
    )
    assert status == 401
    assert body["error"] == "invalid_client"
    assert headers["WWW-Authenticate"].startswith("Basic")


async def test_scopes_may_be_requested_within_what_the_resource_allows(daemon: Daemon) -> None:
    body = await daemon.tokens(scope="files:read files:write")
    assert set(body["scope"].split()) == {"files:read", "files:write"}


async def test_an_unknown_scope_is_invalid_scope_at_the_client(daemon: Daemon) -> None:
    hop, _ = await daemon.login(scope="admin")
    assert hop.location is not None
    assert query_of(hop.location)["error"] == "invalid_scope"


async def test_an_unknown_resource_is_invalid_target(daemon: Daemon) -> None:
    hop, _ = await daemon.login(resource="https://other.example.com/mcp")
    assert hop.location is not None
    assert query_of(hop.location)["error"] == "invalid_target"


async def test_a_named_resource_binds_the_token_to_it(daemon: Daemon) -> None:
    body = await daemon.tokens(resource="https://mail.example.com/mcp")
    from mcp_oauthd.oauth.tokens import token_hash

    record = await daemon.storage.get_access_token(token_hash(body["access_token"]))
    assert record is not None
    assert record.resource == "https://mail.example.com/mcp"
    assert record.scopes == ["mail"]


async def test_the_resource_in_the_token_request_must_match_the_code(daemon: Daemon) -> None:
    code, verifier = await daemon.code()
    status, body, _ = await daemon.token(
        {
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "client_id": "cli",
            "resource": "https://mail.example.com/mcp",
        }
    )
    assert status == 400
    assert body["error"] == "invalid_target"


async def test_an_expired_code_is_invalid_grant(daemon: Daemon) -> None:
    code, verifier = await daemon.code()
    daemon.clock.advance(61)
    status, body, _ = await daemon.token(
        {
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "client_id": "cli",
        }
    )
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_remembered_consent_skips_the_consent_page_next_time(daemon: Daemon) -> None:
    await daemon.tokens()
    _verifier, challenge = new_pair()
    browser = daemon.browser()
    hop = await browser.get(await daemon.authorize_url(code_challenge=challenge))
    assert hop.status == 302  # straight to the login page, no consent page
    assert "/login?" in (hop.location or "")


async def test_consent_is_asked_again_for_wider_scopes(daemon: Daemon) -> None:
    await daemon.tokens()
    _, challenge = new_pair()
    hop = await daemon.browser().get(
        await daemon.authorize_url(code_challenge=challenge, scope="files:read files:write")
    )
    assert hop.status == 200
    assert 'name="csrf_token"' in hop.text


async def test_consent_disabled_goes_straight_to_login(daemon_factory: object) -> None:
    daemon: Daemon = await daemon_factory(consent={"enabled": False})  # type: ignore[operator]
    body = await daemon.tokens()
    assert body["access_token"]


async def test_the_consent_page_names_the_client_redirect_host_scopes_and_resource(
    daemon: Daemon,
) -> None:
    _, challenge = new_pair()
    hop = await daemon.browser().get(await daemon.authorize_url(code_challenge=challenge))
    assert hop.status == 200
    for text in ("Test CLI", "127.0.0.1", "files:read", "Files"):
        assert text in hop.text


async def test_a_custom_scheme_client_gets_a_hand_off_page(daemon: Daemon) -> None:
    hop, _ = await daemon.login(
        client_id="ide", redirect_uri="cursor://anysphere.cursor-retrieval/oauth/callback"
    )
    assert hop.status == 200
    assert "cursor://anysphere.cursor-retrieval/oauth/callback?code=" in hop.text.replace(
        "&amp;", "&"
    )


async def test_an_access_policy_refuses_outsiders_with_a_page_and_an_audit_event(
    daemon_factory: object,
) -> None:
    daemon: Daemon = await daemon_factory(  # type: ignore[operator]
        access_policy={"allowed_domains": ["example.com"]}
    )
    hop, _ = await daemon.login(username="mallory")
    assert hop.status == 403
    assert "not allowed" in hop.text
    assert "error=access_denied" in hop.text
    assert daemon.events("login.refused")
    # An insider still gets in.
    assert (await daemon.tokens())["access_token"]


async def test_groups_in_the_policy_admit_members(daemon_factory: object) -> None:
    daemon: Daemon = await daemon_factory(  # type: ignore[operator]
        access_policy={"allowed_groups": ["staff"]}
    )
    assert (await daemon.tokens())["access_token"]
    hop, _ = await daemon.login(username="mallory")
    assert hop.status == 403


async def test_fifty_concurrent_redemptions_of_one_code_have_one_winner_then_revoked(
    daemon: Daemon,
) -> None:
    code, verifier = await daemon.code()
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": verifier,
        "client_id": "cli",
    }
    results = await asyncio.gather(*(daemon.token(dict(data)) for _ in range(50)))
    winners = [body for status, body, _ in results if status == 200]
    assert len(winners) == 1
    assert all(body["error"] == "invalid_grant" for status, body, _ in results if status != 200)
    from mcp_oauthd.oauth.tokens import token_hash

    # The reuse revoked what the first redemption issued.
    assert await daemon.storage.get_access_token(token_hash(winners[0]["access_token"])) is None
    assert daemon.events("code.reused")


async def test_login_page_requires_the_csrf_token(daemon: Daemon) -> None:
    _, challenge = new_pair()
    browser = daemon.browser()
    hop = await browser.get(await daemon.authorize_url(code_challenge=challenge))
    action, fields = form_fields(hop.text)
    fields["decision"] = "approve"
    hop = await browser.follow(await browser.post(action, fields), "http://127.0.0.1:5555")
    action, fields = form_fields(hop.text)
    fields.update(username="alice", password="x", csrf_token="forged")
    hop = await browser.post(action, fields)
    assert hop.status == 403

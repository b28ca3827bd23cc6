"""Dynamically registered clients complete the whole login flow over real HTTP."""

from __future__ import annotations

import aiohttp

from mcp_oauthd.testing.browser import form_fields
from tests.clients.conftest import CURSOR, PYTHON_SDK, VSCODE, WEB_APP, manage, register
from tests.daemon import Daemon


async def test_a_registered_public_client_logs_in_and_refreshes(daemon: Daemon) -> None:
    client_id = (await register(daemon, VSCODE)).body["client_id"]
    # VS Code registers port 33418 and comes back on whatever port it could bind.
    redirect = "http://127.0.0.1:51234/"
    tokens = await daemon.tokens(client_id=client_id, redirect_uri=redirect)
    assert tokens["access_token"].startswith("mcpat_")
    status, body, _ = await daemon.token(
        {
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": client_id,
        }
    )
    assert status == 200, body
    [issued, *_] = daemon.events("token.issued")
    assert issued["client_id"] == client_id


async def test_a_registered_confidential_client_logs_in_with_its_secret(daemon: Daemon) -> None:
    created = (await register(daemon, WEB_APP)).body
    client_id, secret = created["client_id"], created["client_secret"]
    redirect = WEB_APP["redirect_uris"][0]
    code, verifier = await daemon.code(client_id=client_id, redirect_uri=redirect)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": verifier,
        "redirect_uri": redirect,
    }
    status, body, headers = await daemon.token(form, auth=aiohttp.BasicAuth(client_id, "nope"))
    assert status == 401
    assert body["error"] == "invalid_client"
    assert headers["WWW-Authenticate"].startswith("Basic")
    status, body, _ = await daemon.token(form, auth=aiohttp.BasicAuth(client_id, secret))
    assert status == 200, body
    assert body["refresh_token"].startswith("mcprt_")


async def test_a_client_secret_post_client_logs_in(daemon: Daemon) -> None:
    created = (await register(daemon, PYTHON_SDK)).body
    redirect = "http://localhost:40404/callback"
    code, verifier = await daemon.code(client_id=created["client_id"], redirect_uri=redirect)
    status, body, _ = await daemon.token(
        {
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "redirect_uri": redirect,
            "client_id": created["client_id"],
            "client_secret": created["client_secret"],
        }
    )
    assert status == 200, body


async def test_a_confidential_client_cannot_skip_its_secret(daemon: Daemon) -> None:
    created = (await register(daemon, WEB_APP)).body
    redirect = WEB_APP["redirect_uris"][0]
    code, verifier = await daemon.code(client_id=created["client_id"], redirect_uri=redirect)
    status, body, _ = await daemon.token(
        {
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "redirect_uri": redirect,
            "client_id": created["client_id"],
        }
    )
    assert status == 401
    assert body["error"] == "invalid_client"


async def test_a_cursor_client_gets_its_code_through_the_handoff_page(daemon: Daemon) -> None:
    client_id = (await register(daemon, CURSOR)).body["client_id"]
    redirect = CURSOR["redirect_uris"][0]
    hop, _ = await daemon.login(client_id=client_id, redirect_uri=redirect)
    assert hop.status == 200
    assert "Open the application" in hop.text
    assert redirect + "?code=mcpac_" in hop.text.replace("&amp;", "&")


async def test_a_registered_redirect_uri_must_match(daemon: Daemon) -> None:
    client_id = (await register(daemon, WEB_APP)).body["client_id"]
    for redirect in (
        "https://agent.example.com/oauth/callback/../evil",
        "https://agent.example.com/oauth/callback?next=evil",
        "https://agent.example.com.evil.example/oauth/callback",
    ):
        hop, _ = await daemon.login(client_id=client_id, redirect_uri=redirect)
        assert hop.status == 400
        assert "does not match" in hop.text


async def test_the_consent_page_says_a_registered_name_is_not_verified(daemon: Daemon) -> None:
    client_id = (await register(daemon, {**WEB_APP, "client_name": "Totally Official"})).body[
        "client_id"
    ]
    browser = daemon.browser()
    hop = await browser.get(
        await daemon.authorize_url(
            client_id=client_id,
            redirect_uri=WEB_APP["redirect_uris"][0],
            code_challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        )
    )
    assert hop.status == 200
    assert "Totally Official" in hop.text
    assert "not verified" in hop.text
    assert "agent.example.com" in hop.text
    assert form_fields(hop.text)[1]["flow"]


async def test_deleting_a_client_revokes_its_tokens(daemon: Daemon) -> None:
    created = (await register(daemon, VSCODE)).body
    client_id = created["client_id"]
    tokens = await daemon.tokens(client_id=client_id, redirect_uri="http://127.0.0.1:41000/")
    reply = await manage(
        daemon, "DELETE", created["registration_client_uri"], created["registration_access_token"]
    )
    assert reply.status == 204
    assert daemon.storage._access == {}
    status, body, _ = await daemon.token(
        {
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": client_id,
        }
    )
    assert status == 401
    assert body["error"] == "invalid_client"

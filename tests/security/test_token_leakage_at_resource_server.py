"""RFC 9700 §4.9: access token leakage at the resource server. Every access token is bound
to exactly one MCP server (RFC 8707 audience), so a counterfeit or compromised resource
server cannot replay the tokens it receives at another one."""

from __future__ import annotations

from typing import Any

import pytest

from tests.daemon import Daemon
from tests.resource.conftest import local_provider
from tests.security.support import FILES, MAIL, introspect, resources, verify


@pytest.fixture
async def daemon(daemon_factory: Any) -> Daemon:
    result: Daemon = await daemon_factory(provider=local_provider(), resources=resources())
    return result


async def test_a_token_received_by_one_mcp_server_is_refused_by_another(daemon: Daemon) -> None:
    """RFC 9700 §4.9.1 (counterfeit resource server): the mail server replays the token
    it was given at the files server."""
    mail_token = (await daemon.tokens(resource=MAIL, scope="mail"))["access_token"]
    assert await verify(daemon, mail_token, resource=MAIL) == 200
    assert await verify(daemon, mail_token, resource=FILES) == 401
    assert await introspect(daemon, mail_token, rs="files-rs") == {"active": False}


async def test_a_resource_server_learns_nothing_about_tokens_for_another(daemon: Daemon) -> None:
    """RFC 9700 §4.9 / RFC 7662 §4: introspection answers for the caller's audience only."""
    files_token = (await daemon.tokens())["access_token"]
    assert await introspect(daemon, files_token, rs="mail-rs") == {"active": False}
    mine = await introspect(daemon, files_token, rs="files-rs")
    assert (mine["active"], mine["aud"]) == (True, FILES)


async def test_a_token_cannot_be_requested_for_a_resource_that_is_not_configured(
    daemon: Daemon,
) -> None:
    """RFC 9700 §4.9.2 / RFC 8707 §2: an attacker-run "resource" cannot get tokens here."""
    hop, _ = await daemon.login(resource="https://attacker.example/mcp")
    assert "error=invalid_target" in (hop.location or "")


async def test_the_token_request_cannot_widen_the_audience_of_the_code(daemon: Daemon) -> None:
    """RFC 8707 §2.2: a code for the files server is not redeemed for the mail server."""
    code, verifier = await daemon.code()
    status, body, _ = await daemon.token(
        {
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "client_id": "cli",
            "resource": MAIL,
        }
    )
    assert (status, body["error"]) == (400, "invalid_target")

"""RFC 9700 §4.5: authorization code injection. A stolen or injected code is useless
without the PKCE verifier of the session that started the flow, is bound to the client it
was issued to, and a second use revokes what the first one issued (OAuth 2.1 §4.1.3)."""

from __future__ import annotations

import aiohttp

from mcp_oauthd.oauth.pkce import new_pair
from tests.daemon import Daemon
from tests.security.support import verify


def redeem(code: str, verifier: str, client_id: str = "cli") -> dict[str, str]:
    return {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": verifier,
        "client_id": client_id,
    }


async def test_an_injected_code_fails_with_the_attackers_own_verifier(daemon: Daemon) -> None:
    """RFC 9700 §4.5.3: the attacker injects a victim's code into their own session; the
    token request carries the attacker session's verifier, which does not match."""
    victim_code, _ = await daemon.code()
    attacker_verifier, _ = new_pair()
    status, body, _ = await daemon.token(redeem(victim_code, attacker_verifier))
    assert (status, body["error"]) == (400, "invalid_grant")
    assert daemon.events("pkce.failed")


async def test_a_code_issued_to_one_client_is_refused_for_another(daemon: Daemon) -> None:
    """RFC 9700 §4.5 / RFC 6749 §4.1.3: the code is bound to its client."""
    code, verifier = await daemon.code()
    status, body, _ = await daemon.token(
        redeem(code, verifier, "webapp"), auth=aiohttp.BasicAuth("webapp", "s3cret-s3cret-s3cret")
    )
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_a_replayed_code_revokes_the_tokens_the_first_use_issued(daemon: Daemon) -> None:
    """RFC 9700 §4.5 / OAuth 2.1 §4.1.3: whoever redeemed first, a second redemption means
    the code leaked, so everything issued from it dies."""
    code, verifier = await daemon.code()
    status, first, _ = await daemon.token(redeem(code, verifier))
    assert status == 200
    assert await verify(daemon, first["access_token"]) == 200
    status, body, _ = await daemon.token(redeem(code, verifier))
    assert (status, body["error"]) == (400, "invalid_grant")
    assert await verify(daemon, first["access_token"]) == 401
    refreshed = await daemon.token(
        {"grant_type": "refresh_token", "refresh_token": first["refresh_token"], "client_id": "cli"}
    )
    assert refreshed[0] == 400
    assert daemon.events("code.reused")


async def test_a_code_that_was_never_issued_is_refused(daemon: Daemon) -> None:
    """RFC 9700 §4.5: guessing is hopeless (256-bit codes, stored only as hashes)."""
    status, body, _ = await daemon.token(redeem("mcpac_" + "A" * 43, new_pair()[0]))
    assert (status, body["error"]) == (400, "invalid_grant")

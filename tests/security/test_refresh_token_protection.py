"""RFC 9700 §4.14: refresh token protection. Refresh tokens rotate; a rotated one replayed
after the grace window revokes the whole family (whoever held it: the attacker or the
legitimate client); they are bound to their client and end with their grant."""

from __future__ import annotations

import aiohttp

from tests.daemon import Daemon
from tests.security.support import verify


def refresh(token: str, client_id: str = "cli") -> dict[str, str]:
    return {"grant_type": "refresh_token", "refresh_token": token, "client_id": client_id}


async def test_an_attacker_replaying_a_stolen_rotated_token_kills_the_family(
    daemon: Daemon,
) -> None:
    """RFC 9700 §4.14.2: the legitimate client refreshed; the attacker later uses the old
    token they stole: refused, and the client's current tokens die too."""
    stolen = await daemon.tokens()
    status, current, _ = await daemon.token(refresh(stolen["refresh_token"]))
    assert status == 200
    daemon.clock.advance(daemon.config.tokens.refresh_grace_period + 1)
    status, body, _ = await daemon.token(refresh(stolen["refresh_token"]))
    assert (status, body["error"]) == (400, "invalid_grant")
    assert await verify(daemon, current["access_token"]) == 401
    assert (await daemon.token(refresh(current["refresh_token"])))[0] == 400
    assert daemon.events("refresh.reused")


async def test_the_client_replaying_after_the_attacker_refreshed_first_kills_it_too(
    daemon: Daemon,
) -> None:
    """RFC 9700 §4.14.2: the attacker refreshes first with the stolen token; when the real
    client next uses it, the reuse revokes the attacker's fresh tokens."""
    stolen = await daemon.tokens()
    status, attackers, _ = await daemon.token(refresh(stolen["refresh_token"]))
    assert status == 200
    daemon.clock.advance(daemon.config.tokens.refresh_grace_period + 1)
    assert (await daemon.token(refresh(stolen["refresh_token"])))[0] == 400
    assert await verify(daemon, attackers["access_token"]) == 401
    assert (await daemon.token(refresh(attackers["refresh_token"])))[0] == 400


async def test_a_replay_inside_the_grace_window_gets_the_same_successor_not_a_fork(
    daemon: Daemon,
) -> None:
    """RFC 9700 §4.14.2: concurrent refreshes are tolerated without forking the family."""
    tokens = await daemon.tokens()
    first = await daemon.token(refresh(tokens["refresh_token"]))
    second = await daemon.token(refresh(tokens["refresh_token"]))
    assert first[0] == second[0] == 200
    assert first[1]["refresh_token"] == second[1]["refresh_token"]


async def test_a_refresh_token_is_bound_to_the_client_it_was_issued_to(daemon: Daemon) -> None:
    """RFC 9700 §4.14.2 / OAuth 2.1 §4.3.1: another client cannot use it."""
    tokens = await daemon.tokens()
    status, body, _ = await daemon.token(
        refresh(tokens["refresh_token"], "webapp"),
        auth=aiohttp.BasicAuth("webapp", "s3cret-s3cret-s3cret"),
    )
    assert (status, body["error"]) == (400, "invalid_grant")
    status, body, _ = await daemon.token(refresh(tokens["refresh_token"], "ide"))
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_a_confidential_clients_refresh_token_needs_its_secret(daemon: Daemon) -> None:
    """RFC 9700 §4.14.2: for confidential clients the refresh token is sender-constrained
    by client authentication."""
    secret = aiohttp.BasicAuth("webapp", "s3cret-s3cret-s3cret")
    code, verifier = await daemon.code(
        client_id="webapp", redirect_uri="https://app.example.com/cb"
    )
    status, tokens, _ = await daemon.token(
        {
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "redirect_uri": "https://app.example.com/cb",
        },
        auth=secret,
    )
    assert status == 200, tokens
    status, body, _ = await daemon.token(refresh(tokens["refresh_token"], "webapp"))
    assert (status, body["error"]) == (401, "invalid_client")
    status, _, _ = await daemon.token(refresh(tokens["refresh_token"], "webapp"), auth=secret)
    assert status == 200


async def test_an_idle_refresh_token_expires(daemon: Daemon) -> None:
    """RFC 9700 §4.14.2: refresh tokens expire after a period of inactivity."""
    tokens = await daemon.tokens()
    daemon.clock.advance(daemon.config.tokens.refresh_token_ttl + 1)
    status, body, _ = await daemon.token(refresh(tokens["refresh_token"]))
    assert (status, body["error"]) == (400, "invalid_grant")

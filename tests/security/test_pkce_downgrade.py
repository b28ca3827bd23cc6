"""RFC 9700 §4.8: PKCE downgrade. PKCE is required on every authorization request and
only S256 exists, so an attacker can neither strip the challenge nor downgrade it to
`plain`, and a code bound to a challenge needs its verifier."""

from __future__ import annotations

from typing import Any

from mcp_oauthd.oauth.pkce import new_pair
from mcp_oauthd.testing.browser import query_of
from tests.daemon import Daemon


async def test_only_s256_is_advertised(daemon: Daemon) -> None:
    """RFC 9700 §4.8: clients never see a weaker method to fall back to."""
    async with daemon.http.get(daemon.url + "/.well-known/oauth-authorization-server") as resp:
        meta: dict[str, Any] = await resp.json()
    assert meta["code_challenge_methods_supported"] == ["S256"]


async def test_a_request_with_the_challenge_stripped_is_refused(daemon: Daemon) -> None:
    """RFC 9700 §4.8.2: without a challenge there is nothing to downgrade to: refused."""
    hop = await daemon.browser().get(await daemon.authorize_url())
    query = query_of(hop.location or "")
    assert (hop.status, query["error"], query["iss"]) == (
        302,
        "invalid_request",
        daemon.config.issuer,
    )


async def test_the_plain_method_is_refused(daemon: Daemon) -> None:
    """RFC 9700 §4.8 / §2.1.1: `plain` would let a stolen challenge act as the verifier."""
    hop = await daemon.browser().get(
        await daemon.authorize_url(code_challenge="a" * 43, code_challenge_method="plain")
    )
    assert query_of(hop.location or "")["error"] == "invalid_request"


async def test_a_missing_method_is_not_read_as_plain(daemon: Daemon) -> None:
    """RFC 7636 §4.3 defaults a missing method to `plain`; that default is refused."""
    url = await daemon.authorize_url(code_challenge=new_pair()[1])
    hop = await daemon.browser().get(url.replace("code_challenge_method=S256", "x=1"))
    assert query_of(hop.location or "")["error"] == "invalid_request"


async def test_a_token_request_without_the_verifier_fails(daemon: Daemon) -> None:
    """RFC 9700 §4.8.2: a code bound to a challenge is never redeemed without its verifier."""
    code, _ = await daemon.code()
    status, body, _ = await daemon.token(
        {"grant_type": "authorization_code", "code": code, "client_id": "cli"}
    )
    assert (status, body["error"]) == (400, "invalid_request")


async def test_the_challenge_itself_is_not_accepted_as_the_verifier(daemon: Daemon) -> None:
    """RFC 9700 §4.8: an attacker who saw the authorization request knows the challenge."""
    verifier, challenge = new_pair()
    code, _ = await daemon.code(code_challenge=challenge)
    status, body, _ = await daemon.token(
        {
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": challenge + "0000",  # a challenge padded to a valid length
            "client_id": "cli",
        }
    )
    assert (status, body["error"]) == (400, "invalid_grant")
    assert verifier

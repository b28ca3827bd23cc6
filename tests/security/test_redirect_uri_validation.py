"""RFC 9700 §4.1: insufficient redirect URI validation. The authorization endpoint compares
the redirect URI exactly with the registered ones (loopback: any port, RFC 8252 §7.3),
never redirects to one that does not match, and the token endpoint checks it again.
The matcher itself is property-tested in tests/clients/test_redirect_rules.py."""

from __future__ import annotations

import pytest

from mcp_oauthd.oauth.pkce import new_pair
from tests.daemon import Daemon

REDIRECT_TRICKS = [
    "http://127.0.0.1:5555/callback/../evil",
    "http://127.0.0.1:5555/callback?x=1",
    "http://127.0.0.1.evil.com/callback",
    "http://evil@127.0.0.1:5555/callback",
    "http://localhost:5555/callback",
    "https://127.0.0.1:5555/callback",
    "http://127.0.0.1:5555/CALLBACK",
    "http://127.0.0.1:5555/callback#frag",
    "javascript:alert(1)",
    "http://127.0.0.1:5555/callback%2F..",
]


@pytest.mark.parametrize("redirect_uri", REDIRECT_TRICKS)
async def test_a_redirect_uri_trick_is_refused_with_a_page_not_a_redirect(
    daemon: Daemon, redirect_uri: str
) -> None:
    """RFC 9700 §4.1 (redirect URI manipulation): no pattern, prefix or normalised match;
    the refusal is a page, so the attacker's URI never receives a code or an error."""
    _, challenge = new_pair()
    hop = await daemon.browser().get(
        await daemon.authorize_url(redirect_uri=redirect_uri, code_challenge=challenge)
    )
    assert hop.status == 400
    assert hop.location is None
    assert "redirect" in hop.text.lower()


async def test_a_loopback_redirect_matches_on_any_port_but_nothing_else(daemon: Daemon) -> None:
    """RFC 9700 §4.1.3 / RFC 8252 §7.3: only the port of a loopback URI may vary."""
    body = await daemon.tokens(redirect_uri="http://127.0.0.1:61234/callback")
    assert body["access_token"]


async def test_a_confidential_clients_https_redirect_must_match_exactly(daemon: Daemon) -> None:
    """RFC 9700 §4.1: an attacker-controlled sub-path of a registered URI is refused."""
    hop = await daemon.browser().get(
        await daemon.authorize_url(
            client_id="webapp",
            redirect_uri="https://app.example.com/cb/../../attacker",
            code_challenge=new_pair()[1],
        )
    )
    assert (hop.status, hop.location) == (400, None)


async def test_a_loopback_client_must_name_its_redirect_uri(daemon: Daemon) -> None:
    """RFC 9700 §4.1: with a port-agnostic registration the URI cannot be implied."""
    url = await daemon.authorize_url(code_challenge=new_pair()[1])
    url = url.replace("redirect_uri=", "x=")
    hop = await daemon.browser().get(url)
    assert (hop.status, hop.location) == (400, None)


async def test_a_different_redirect_uri_at_the_token_endpoint_is_refused(daemon: Daemon) -> None:
    """RFC 9700 §4.1 / OAuth 2.1 §4.1.3: the code is bound to the redirect URI it went to."""
    code, verifier = await daemon.code()
    status, body, _ = await daemon.token(
        {
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "client_id": "cli",
            "redirect_uri": "http://127.0.0.1:5555/other",
        }
    )
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_a_registered_client_cannot_use_an_unregistered_redirect(daemon: Daemon) -> None:
    """RFC 9700 §4.1 with dynamic registration: only the URIs the client registered."""
    async with daemon.http.post(
        daemon.url + "/oauth/register",
        json={"redirect_uris": ["https://client.example/cb"], "client_name": "Reg"},
    ) as resp:
        assert resp.status == 201
        client_id = (await resp.json())["client_id"]
    hop = await daemon.browser().get(
        await daemon.authorize_url(
            client_id=client_id,
            redirect_uri="https://attacker.example/cb",
            code_challenge=new_pair()[1],
        )
    )
    assert (hop.status, hop.location) == (400, None)

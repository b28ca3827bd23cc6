"""Malformed authorization requests, refused as RFC 6749 §4.1.2.1 says.

The RFC 9700 §4 attacks (redirect URI tricks, PKCE downgrade, code injection, CSRF,
browser binding) live in tests/security/, one module per attack."""

from __future__ import annotations

from mcp_oauthd.oauth.pkce import new_pair
from mcp_oauthd.testing.browser import query_of
from tests.flows.conftest import Daemon


async def test_a_duplicated_parameter_is_refused(daemon: Daemon) -> None:
    url = await daemon.authorize_url(code_challenge=new_pair()[1])
    hop = await daemon.browser().get(url + "&client_id=cli")
    assert hop.status == 400


async def test_an_unsupported_response_type_is_reported_to_the_client(daemon: Daemon) -> None:
    hop = await daemon.browser().get(
        await daemon.authorize_url(response_type="token", code_challenge=new_pair()[1])
    )
    assert hop.location
    assert query_of(hop.location)["error"] == "unsupported_response_type"

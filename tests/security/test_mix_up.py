"""RFC 9700 §4.4: mix-up attacks. Every authorization response, success or error, carries
`iss` (RFC 9207), byte-identical to the issuer in the metadata, so a client talking to
several authorization servers can tell which one answered."""

from __future__ import annotations

from typing import Any

from mcp_oauthd.oauth.pkce import new_pair
from mcp_oauthd.testing.browser import query_of
from tests.daemon import Daemon


async def metadata(daemon: Daemon) -> dict[str, Any]:
    async with daemon.http.get(daemon.url + "/.well-known/oauth-authorization-server") as resp:
        body: dict[str, Any] = await resp.json()
        return body


async def test_a_successful_authorization_response_names_the_issuer(daemon: Daemon) -> None:
    """RFC 9700 §4.4.2 / RFC 9207 §2: `iss` with the code, equal to the metadata issuer."""
    meta = await metadata(daemon)
    assert meta["authorization_response_iss_parameter_supported"] is True
    hop, _ = await daemon.login()
    query = query_of(hop.location or "")
    assert "code" in query
    assert query["iss"] == meta["issuer"] == daemon.config.issuer


async def test_an_error_authorization_response_names_the_issuer_too(daemon: Daemon) -> None:
    """RFC 9207 §2: errors carry `iss` as well (denied consent, bad request)."""
    hop, _ = await daemon.login(approve=False)
    denied = query_of(hop.location or "")
    assert (denied["error"], denied["iss"]) == ("access_denied", daemon.config.issuer)
    hop = await daemon.browser().get(
        await daemon.authorize_url(scope="nonsense", code_challenge=new_pair()[1])
    )
    refused = query_of(hop.location or "")
    assert (refused["error"], refused["iss"]) == ("invalid_scope", daemon.config.issuer)


async def test_an_issuer_with_a_path_is_sent_byte_for_byte(daemon_factory: Any, port: int) -> None:
    """RFC 9207 §2.4: the client compares `iss` by simple string comparison, so the issuer
    path comes back exactly, in the metadata and in the authorization response."""
    from tests.resource.conftest import local_provider

    issuer = f"http://127.0.0.1:{port}/tenant-a"
    daemon: Daemon = await daemon_factory(issuer=issuer, provider=local_provider())
    daemon.url = issuer  # every endpoint lives under the issuer path
    async with daemon.http.get(
        f"http://127.0.0.1:{port}/.well-known/oauth-authorization-server/tenant-a"
    ) as resp:
        assert (await resp.json())["issuer"] == issuer
    hop, _ = await daemon.login()
    assert query_of(hop.location or "")["iss"] == issuer

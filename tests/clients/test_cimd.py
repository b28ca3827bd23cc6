"""Client ID Metadata Documents against a local https server with its own test CA.

The fetcher is told to trust that CA (``cimd.ca_file``) and to allow loopback with the
test-only switch; everything else about it is production behaviour.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from mcp_oauthd.clock import FakeClock
from mcp_oauthd.config.models import CimdConfig
from mcp_oauthd.oauth.errors import TemporarilyUnavailable
from mcp_oauthd.oauth.redirects import RedirectPolicy
from mcp_oauthd.security.audit import Auditor
from mcp_oauthd.service.cimd import CimdError, CimdFetcher, cache_lifetime
from mcp_oauthd.storage.base import ClientKind
from tests.clients.conftest import DocumentServer, Pki, cimd_config
from tests.daemon import Daemon

REDIRECT = "http://127.0.0.1:5555/callback"


@pytest.fixture
async def fetcher(pki: Pki) -> AsyncIterator[CimdFetcher]:
    result = CimdFetcher(
        CimdConfig.model_validate(cimd_config(pki)),
        policy=RedirectPolicy(),
        known_scopes=["files:read"],
        clock=FakeClock(),
        auditor=Auditor(),
    )
    yield result
    await result.close()


# ----------------------------------------------------------------------------- the flow
async def test_a_client_with_a_metadata_document_completes_the_login_flow(
    cimd_daemon: Daemon, documents: DocumentServer
) -> None:
    client_id = documents.url("good.json")
    tokens = await cimd_daemon.tokens(client_id=client_id, redirect_uri=REDIRECT)
    assert tokens["access_token"].startswith("mcpat_")
    status, body, _ = await cimd_daemon.token(
        {
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": client_id,
        }
    )
    assert status == 200, body
    assert cimd_daemon.events("token.issued")[0]["client_id"] == client_id
    assert documents.hits["good.json"] == 1  # authorize, consent and token all hit the cache


async def test_the_consent_page_shows_the_document_host_and_warns_on_localhost_only(
    cimd_daemon: Daemon, documents: DocumentServer
) -> None:
    browser = cimd_daemon.browser()
    params = {
        "redirect_uri": REDIRECT,
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
    }
    hop = await browser.get(
        await cimd_daemon.authorize_url(client_id=documents.url("good.json"), **params)
    )
    assert hop.status == 200
    assert 'Application published at <span class="host">127.0.0.1</span>' in hop.text
    assert "only returns to your own computer" in hop.text
    assert "Hosted Agent" in hop.text
    hop = await browser.get(
        await cimd_daemon.authorize_url(
            client_id=documents.url("web.json"),
            **{**params, "redirect_uri": "https://agent.example.com/oauth/callback"},
        )
    )
    assert hop.status == 200
    assert "only returns to your own computer" not in hop.text


async def test_cimd_is_advertised_and_can_be_turned_off(daemon_factory: Any) -> None:
    daemon: Daemon = await daemon_factory(cimd={"enabled": False})
    async with daemon.http.get(daemon.url + "/.well-known/oauth-authorization-server") as resp:
        meta = await resp.json()
    assert "client_id_metadata_document_supported" not in meta
    hop, _ = await daemon.login(client_id="https://agent.example.com/client.json")
    assert hop.status == 400
    assert "not registered" in hop.text


# ----------------------------------------------------------------------------- refusals
BAD_DOCUMENTS = {
    "redirect.json": "redirects are not followed",
    "big.json": "larger than 5120 bytes",
    "endless.json": "larger than 5120 bytes",
    "mismatch.json": "does not match its URL",
    "html.json": "not JSON",
    "garbage.json": "not valid JSON",
    "no-name.json": "client_name",
    "secret.json": "token_endpoint_auth_method none",
    "missing.json": "HTTP 404",
    "gzip.json": "must not be compressed",
}


@pytest.mark.parametrize("name", sorted(BAD_DOCUMENTS))
async def test_a_bad_document_is_refused_with_a_clear_error(
    cimd_daemon: Daemon, documents: DocumentServer, name: str
) -> None:
    client_id = documents.url(name)
    hop, _ = await cimd_daemon.login(client_id=client_id, redirect_uri=REDIRECT)
    assert hop.status == 400
    assert BAD_DOCUMENTS[name] in hop.text
    assert "<html" in hop.text.lower()
    status, body, _ = await cimd_daemon.token(
        {
            "grant_type": "authorization_code",
            "code": "mcpac_x",
            "code_verifier": "v" * 43,
            "client_id": client_id,
        }
    )
    assert status == 400
    assert body["error"] == "invalid_client"
    assert BAD_DOCUMENTS[name] in body["error_description"]
    [event] = cimd_daemon.events("cimd.refused")  # fetched once, failure cached
    assert event["client_id"] == client_id
    assert documents.hits[name] == 1
    assert documents.hits["good.json"] == 0  # a redirect is never followed


async def test_a_stalled_document_server_is_a_timeout_not_a_hang(
    fetcher: CimdFetcher, documents: DocumentServer
) -> None:
    with pytest.raises(CimdError, match="timed out"):
        await fetcher.get(documents.url("slow.json"))
    assert documents.hits["slow.json"] == 1


async def test_an_untrusted_certificate_is_refused(documents: DocumentServer) -> None:
    untrusting = CimdFetcher(
        CimdConfig(allow_loopback_for_tests=True, timeout=2),
        policy=RedirectPolicy(),
        known_scopes=[],
        clock=FakeClock(),
    )
    try:
        with pytest.raises(CimdError, match="TLS certificate"):
            await untrusting.get(documents.url("good.json"))
    finally:
        await untrusting.close()


@pytest.mark.parametrize(
    "client_id",
    [
        "https://127.0.0.1/",
        "https://127.0.0.1",
        "https://127.0.0.1/client.json#frag",
        "https://user@127.0.0.1/client.json",
        "https://127.0.0.1/a/../client.json",
        "https://127.0.0.1/" + "a" * 600,
        "https://127.0.0.1/clïent.json",
        "https://127.0.0.1/client.json\n",
        "http://127.0.0.1/client.json",
    ],
)
async def test_malformed_client_id_urls_are_refused_without_a_fetch(
    fetcher: CimdFetcher, client_id: str
) -> None:
    with pytest.raises(CimdError):
        await fetcher.get(client_id)
    assert fetcher.fetches == 0


async def test_the_host_allowlist_is_applied_before_any_fetch(
    pki: Pki, documents: DocumentServer
) -> None:
    allow = CimdFetcher(
        CimdConfig.model_validate(cimd_config(pki, allowed_hosts=["*.agents.example.com"])),
        policy=RedirectPolicy(),
        known_scopes=[],
        clock=FakeClock(),
    )
    try:
        with pytest.raises(CimdError, match="not accepted"):
            await allow.get(documents.url("good.json"))
    finally:
        await allow.close()
    assert documents.hits["good.json"] == 0


# ----------------------------------------------------------------------------- caching
async def test_a_document_is_cached_per_its_headers(
    fetcher: CimdFetcher, documents: DocumentServer
) -> None:
    url = documents.url("good.json")  # Cache-Control: max-age=300
    client = await fetcher.get(url)
    assert client.kind is ClientKind.CIMD
    assert client.client_id == url
    assert client.client_name == "Hosted Agent"
    assert client.is_public
    await fetcher.get(url)
    assert documents.hits["good.json"] == 1
    clock = fetcher._clock
    assert isinstance(clock, FakeClock)
    clock.advance(299)
    await fetcher.get(url)
    assert documents.hits["good.json"] == 1
    clock.advance(2)
    await fetcher.get(url)
    assert documents.hits["good.json"] == 2


async def test_concurrent_requests_for_one_document_share_one_fetch(
    fetcher: CimdFetcher, documents: DocumentServer
) -> None:
    url = documents.url("gated.json")
    waiters = [asyncio.create_task(fetcher.get(url)) for _ in range(20)]
    while documents.hits["gated.json"] == 0:
        await asyncio.sleep(0)  # let the one fetch reach the server (no wall-clock wait)
    documents.gate.set()
    clients = await asyncio.gather(*waiters)
    assert {c.client_id for c in clients} == {url}
    assert documents.hits["gated.json"] == 1
    assert fetcher.fetches == 1


async def test_a_failure_is_cached_briefly(fetcher: CimdFetcher, documents: DocumentServer) -> None:
    url = documents.url("flaky.json")
    for _ in range(3):
        with pytest.raises(CimdError, match="HTTP 500"):
            await fetcher.get(url)
    assert documents.hits["flaky.json"] == 1
    documents.flaky_ok = True
    clock = fetcher._clock
    assert isinstance(clock, FakeClock)
    clock.advance(fetcher.config.error_cache_ttl + 1)
    assert (await fetcher.get(url)).client_id == url
    assert documents.hits["flaky.json"] == 2


async def test_the_cache_holds_a_bounded_number_of_documents(
    pki: Pki, documents: DocumentServer
) -> None:
    small = CimdFetcher(
        CimdConfig.model_validate(cimd_config(pki, max_cache_entries=2)),
        policy=RedirectPolicy(),
        known_scopes=[],
        clock=FakeClock(),
    )
    try:
        for name in ("good.json", "web.json", "no-store.json", "expires.json"):
            await small.get(documents.url(name))
        assert len(small._cache) == 2
    finally:
        await small.close()


def test_cache_lifetimes_follow_the_headers_within_bounds() -> None:
    config = CimdConfig(min_cache_ttl=60, max_cache_ttl=86400, default_cache_ttl=600)
    now = 1_800_000_000.0
    assert cache_lifetime({}, now, config) == 600
    assert cache_lifetime({"Cache-Control": "max-age=300"}, now, config) == 300
    assert cache_lifetime({"Cache-Control": "public, max-age=5"}, now, config) == 60
    assert cache_lifetime({"Cache-Control": "max-age=9999999"}, now, config) == 86400
    assert cache_lifetime({"Cache-Control": "no-store"}, now, config) == 60
    assert cache_lifetime({"Cache-Control": "max-age=abc"}, now, config) == 60
    headers = {"Date": "Wed, 21 Oct 2026 07:28:00 GMT", "Expires": "Wed, 21 Oct 2026 09:28:00 GMT"}
    assert cache_lifetime(headers, now, config) == 7200
    assert cache_lifetime({"Expires": "0"}, now, config) == 60


async def test_a_flood_of_distinct_documents_is_bounded(
    pki: Pki, documents: DocumentServer
) -> None:
    small = CimdFetcher(
        CimdConfig.model_validate(cimd_config(pki, max_concurrent_fetches=1)),
        policy=RedirectPolicy(),
        known_scopes=[],
        clock=FakeClock(),
    )
    try:
        waiters = [
            asyncio.create_task(small.get(documents.url(f"gated.json?n={i}"))) for i in range(4)
        ]
        while documents.hits["gated.json"] == 0:
            await asyncio.sleep(0)
        with pytest.raises(TemporarilyUnavailable):
            await small.get(documents.url("gated.json?n=overflow"))
        documents.gate.set()
        assert len(await asyncio.gather(*waiters, return_exceptions=True)) == 4
    finally:
        await small.close()

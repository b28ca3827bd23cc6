from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from mcp_oauthd.clock import FakeClock
from mcp_oauthd.config.models import GoogleProviderConfig
from mcp_oauthd.providers.base import Identity, UpstreamError, UpstreamTokens
from mcp_oauthd.providers.google import GoogleProvider
from mcp_oauthd.testing.fake_idp import FakeOidcProvider

REDIRECT_URI = "http://127.0.0.1:8080/oauth/callback"
NONCE = "nonce-google"


@pytest.fixture
async def idp(clock: FakeClock) -> AsyncIterator[FakeOidcProvider]:
    async with FakeOidcProvider(clock=clock, alg="RS256") as fake:
        fake.claims["hd"] = "example.com"
        yield fake


def make_provider(idp: FakeOidcProvider, clock: FakeClock, **overrides: Any) -> GoogleProvider:
    data: dict[str, Any] = {
        "client_id": idp.client_id,
        "client_secret": idp.client_secret,
        "issuer": idp.issuer,
        "allow_insecure_http": True,
        "hosted_domain": "example.com",
    }
    data.update(overrides)
    return GoogleProvider(GoogleProviderConfig.model_validate(data), clock)


@pytest.fixture
async def provider(idp: FakeOidcProvider, clock: FakeClock) -> AsyncIterator[GoogleProvider]:
    p = make_provider(idp, clock)
    yield p
    await p.close()


async def log_in(
    provider: GoogleProvider, idp: FakeOidcProvider, pkce: Any
) -> tuple[Identity, UpstreamTokens]:
    url = await provider.authorization_url(
        redirect_uri=REDIRECT_URI, state="st", code_challenge=pkce.challenge, nonce=NONCE
    )
    answer = await idp.login(url)
    return await provider.exchange(
        code=answer["code"], redirect_uri=REDIRECT_URI, code_verifier=pkce.verifier, nonce=NONCE
    )


async def test_a_google_login_yields_a_google_subject_and_a_refresh_token(
    provider: GoogleProvider, idp: FakeOidcProvider, pkce: Any
) -> None:
    identity, tokens = await log_in(provider, idp, pkce)

    assert identity.subject == "google:user-123"
    assert identity.email == "alice@example.com"
    assert identity.email_verified is True
    assert tokens.refresh_token is not None
    assert idp.requests_to("/userinfo") == []  # the ID token is enough


async def test_google_is_asked_for_offline_access_consent_and_the_hosted_domain(
    provider: GoogleProvider, idp: FakeOidcProvider, pkce: Any
) -> None:
    await log_in(provider, idp, pkce)

    params = idp.authorize_params[-1]
    assert params["access_type"] == "offline"
    assert params["prompt"] == "consent"
    assert params["hd"] == "example.com"
    assert params["code_challenge_method"] == "S256"
    assert "resource" not in params


async def test_no_hd_parameter_is_sent_without_a_hosted_domain(
    idp: FakeOidcProvider, clock: FakeClock, pkce: Any
) -> None:
    provider = make_provider(idp, clock, hosted_domain=None)
    try:
        identity, _ = await log_in(provider, idp, pkce)
    finally:
        await provider.close()
    assert "hd" not in idp.authorize_params[-1]
    assert identity.subject == "google:user-123"


@pytest.mark.parametrize("hd", ["evil.example", None])
async def test_an_account_outside_the_hosted_domain_is_refused(
    provider: GoogleProvider, idp: FakeOidcProvider, pkce: Any, hd: str | None
) -> None:
    if hd is None:
        del idp.claims["hd"]  # a consumer account has no hd claim at all
    else:
        idp.claims["hd"] = hd

    with pytest.raises(UpstreamError, match="hosted domain") as caught:
        await log_in(provider, idp, pkce)
    assert caught.value.kind == "access_denied"


async def test_an_account_without_a_verified_email_is_refused(
    provider: GoogleProvider, idp: FakeOidcProvider, pkce: Any
) -> None:
    idp.claims["email_verified"] = False

    with pytest.raises(UpstreamError, match="verified email") as caught:
        await log_in(provider, idp, pkce)
    assert caught.value.kind == "access_denied"


async def test_google_id_token_defects_are_refused_like_any_oidc_token(
    provider: GoogleProvider, idp: FakeOidcProvider, pkce: Any
) -> None:
    idp.wrong_aud = True

    with pytest.raises(UpstreamError, match="audience"):
        await log_in(provider, idp, pkce)


async def test_a_google_refresh_keeps_the_refresh_token_google_does_not_resend(
    provider: GoogleProvider, idp: FakeOidcProvider, pkce: Any
) -> None:
    _, tokens = await log_in(provider, idp, pkce)
    idp.id_token_on_refresh = True

    renewed = await provider.refresh(tokens)

    assert renewed.refresh_token == tokens.refresh_token
    assert renewed.access_token != tokens.access_token


async def test_the_real_google_issuer_accepts_both_spellings_of_iss(clock: FakeClock) -> None:
    provider = GoogleProvider(GoogleProviderConfig(client_id="c", client_secret="s"), clock)
    assert provider.accepted_issuers() == ("https://accounts.google.com", "accounts.google.com")

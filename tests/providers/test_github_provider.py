from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from yarl import URL

from mcp_oauthd.clock import FakeClock
from mcp_oauthd.config.models import GithubProviderConfig
from mcp_oauthd.providers.base import Identity, UpstreamError, UpstreamTokens
from mcp_oauthd.providers.github import GithubProvider
from mcp_oauthd.testing.fake_idp import FakeGitHub

REDIRECT_URI = "http://127.0.0.1:8080/oauth/callback"


@pytest.fixture
async def github() -> AsyncIterator[FakeGitHub]:
    async with FakeGitHub() as fake:
        yield fake


@pytest.fixture
async def provider(github: FakeGitHub, clock: FakeClock) -> AsyncIterator[GithubProvider]:
    config = GithubProviderConfig(
        client_id=github.client_id,
        client_secret=github.client_secret,
        base_url=github.base_url,
        api_url=github.api_url,
    )
    p = GithubProvider(config, clock, allow_insecure_http=True)
    yield p
    await p.close()


async def log_in(
    provider: GithubProvider, github: FakeGitHub, pkce: Any
) -> tuple[Identity, UpstreamTokens]:
    url = await provider.authorization_url(
        redirect_uri=REDIRECT_URI, state="st", code_challenge=pkce.challenge, nonce="unused"
    )
    answer = await github.login(url)
    return await provider.exchange(
        code=answer["code"], redirect_uri=REDIRECT_URI, code_verifier=pkce.verifier, nonce="n"
    )


async def test_a_github_login_yields_the_numeric_subject_primary_verified_email_and_orgs(
    provider: GithubProvider, github: FakeGitHub, pkce: Any
) -> None:
    identity, tokens = await log_in(provider, github, pkce)

    assert identity == Identity(
        subject="github:4242",
        username="octocat",
        email="octocat@example.com",
        email_verified=True,
        name="The Octocat",
        github_orgs=["acme", "octo-org"],
    )
    assert tokens.access_token.startswith("gho_")
    assert tokens.refresh_token is None
    assert tokens.expires_at is None


async def test_the_github_authorization_request_carries_pkce_and_state(
    provider: GithubProvider, github: FakeGitHub, pkce: Any
) -> None:
    url = await provider.authorization_url(
        redirect_uri=REDIRECT_URI, state="st", code_challenge=pkce.challenge, nonce="n"
    )

    parsed = URL(url)
    assert parsed.path == "/login/oauth/authorize"
    assert dict(parsed.query) == {
        "client_id": github.client_id,
        "redirect_uri": REDIRECT_URI,
        "scope": "read:user user:email read:org",
        "state": "st",
        "code_challenge": pkce.challenge,
        "code_challenge_method": "S256",
    }


async def test_the_token_request_asks_for_json_and_sends_the_verifier(
    provider: GithubProvider, github: FakeGitHub, pkce: Any
) -> None:
    await log_in(provider, github, pkce)

    request = github.requests_to("/login/oauth/access_token")[-1]
    assert "application/json" in request.headers["Accept"]
    assert request.form["code_verifier"] == pkce.verifier


async def test_without_a_primary_verified_email_the_identity_has_no_email(
    provider: GithubProvider, github: FakeGitHub, pkce: Any
) -> None:
    github.user.emails = [
        {"email": "primary@example.com", "primary": True, "verified": False},
        {"email": "other@example.com", "primary": False, "verified": True},
    ]

    identity, _ = await log_in(provider, github, pkce)

    assert identity.email is None
    assert identity.email_verified is False


async def test_without_the_email_scope_the_identity_has_no_email(
    provider: GithubProvider, github: FakeGitHub, pkce: Any
) -> None:
    github.emails_status = 404

    identity, _ = await log_in(provider, github, pkce)

    assert identity.email is None  # the unverified public profile email is not used


async def test_organisations_are_collected_across_pages(
    provider: GithubProvider, github: FakeGitHub, pkce: Any
) -> None:
    github.user.orgs = [f"org-{i}" for i in range(150)]

    identity, _ = await log_in(provider, github, pkce)

    assert identity.github_orgs == github.user.orgs


async def test_a_bad_verification_code_is_invalid_grant(
    provider: GithubProvider, github: FakeGitHub, pkce: Any
) -> None:
    url = await provider.authorization_url(
        redirect_uri=REDIRECT_URI, state="st", code_challenge=pkce.challenge, nonce="n"
    )
    code = (await github.login(url))["code"]
    await provider.exchange(
        code=code, redirect_uri=REDIRECT_URI, code_verifier=pkce.verifier, nonce="n"
    )

    with pytest.raises(UpstreamError) as caught:
        await provider.exchange(
            code=code, redirect_uri=REDIRECT_URI, code_verifier=pkce.verifier, nonce="n"
        )
    assert caught.value.kind == "invalid_grant"
    assert code not in str(caught.value)


async def test_wrong_client_credentials_are_a_server_error_without_the_secret(
    github: FakeGitHub, clock: FakeClock, pkce: Any
) -> None:
    config = GithubProviderConfig(
        client_id=github.client_id,
        client_secret="not-the-secret",
        base_url=github.base_url,
        api_url=github.api_url,
    )
    provider = GithubProvider(config, clock, allow_insecure_http=True)
    try:
        with pytest.raises(UpstreamError) as caught:
            await log_in(provider, github, pkce)
    finally:
        await provider.close()
    assert caught.value.kind == "server_error"
    assert "not-the-secret" not in str(caught.value)


@pytest.mark.parametrize("path", ["/login/oauth/access_token", "/user", "/user/orgs"])
async def test_github_answering_500_is_unavailable(
    provider: GithubProvider, github: FakeGitHub, pkce: Any, path: str
) -> None:
    github.fail_paths = {path}

    with pytest.raises(UpstreamError) as caught:
        await log_in(provider, github, pkce)
    assert caught.value.kind == "unavailable"


async def test_an_unreachable_github_is_unavailable(
    provider: GithubProvider, github: FakeGitHub, pkce: Any
) -> None:
    url = await provider.authorization_url(
        redirect_uri=REDIRECT_URI, state="st", code_challenge=pkce.challenge, nonce="n"
    )
    code = (await github.login(url))["code"]
    await github.stop()

    with pytest.raises(UpstreamError) as caught:
        await provider.exchange(
            code=code, redirect_uri=REDIRECT_URI, code_verifier=pkce.verifier, nonce="n"
        )
    assert caught.value.kind == "unavailable"


async def test_expiring_github_tokens_are_refreshed(
    provider: GithubProvider, github: FakeGitHub, pkce: Any, clock: FakeClock
) -> None:
    github.expiring_tokens = True
    _, tokens = await log_in(provider, github, pkce)
    assert tokens.refresh_token is not None
    assert tokens.expires_at == clock.now() + 28800

    renewed = await provider.refresh(tokens)

    assert renewed.access_token != tokens.access_token
    assert renewed.refresh_token not in (None, tokens.refresh_token)


async def test_a_dead_github_refresh_token_is_invalid_grant(
    provider: GithubProvider, github: FakeGitHub, pkce: Any
) -> None:
    github.expiring_tokens = True
    _, tokens = await log_in(provider, github, pkce)
    github.refresh_invalid = True

    with pytest.raises(UpstreamError) as caught:
        await provider.refresh(tokens)
    assert caught.value.kind == "invalid_grant"


async def test_non_expiring_github_tokens_are_returned_unchanged_on_refresh(
    provider: GithubProvider, github: FakeGitHub, pkce: Any
) -> None:
    _, tokens = await log_in(provider, github, pkce)

    assert await provider.refresh(tokens) is tokens
    assert len(github.requests_to("/login/oauth/access_token")) == 1


def test_a_plain_http_github_is_refused_by_default(clock: FakeClock) -> None:
    config = GithubProviderConfig(
        client_id="c", client_secret="s", base_url="http://github.example.com"
    )
    with pytest.raises(ValueError, match="https"):
        GithubProvider(config, clock)

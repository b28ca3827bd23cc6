"""The fixed_user provider passes mcp-oauthd's provider contract."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import parse_qsl, urlsplit

import pytest
from mcp_oauthd_example.fixed_user import FixedUserConfig, FixedUserProvider

from mcp_oauthd.clock import FakeClock
from mcp_oauthd.providers.base import UpstreamError
from mcp_oauthd.storage.memory import MemoryStorage
from mcp_oauthd.testing.provider_contract import CompleteLogin, ProviderContract

CONFIG = FixedUserConfig(
    username="ada", email="ada@example.com", email_verified=True, groups=["admins"]
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def fixed_user(clock: FakeClock) -> AsyncIterator[FixedUserProvider]:
    provider = FixedUserProvider(CONFIG, MemoryStorage(), clock)
    await provider.start()
    yield provider
    await provider.close()


class TestFixedUserProvider(ProviderContract):
    @pytest.fixture
    def provider(self, fixed_user: FixedUserProvider) -> FixedUserProvider:
        return fixed_user

    @pytest.fixture
    def complete_upstream_login(self) -> CompleteLogin:
        # There is no upstream page: the authorization URL already is the redirect back
        # to our callback, carrying the code and our state.
        async def login(authorization_url: str) -> dict[str, str]:
            return dict(parse_qsl(urlsplit(authorization_url).query))

        return login


async def test_a_login_is_the_configured_user(fixed_user: FixedUserProvider) -> None:
    url, state, verifier, _, nonce = await ProviderContract.begin(
        fixed_user, "http://127.0.0.1:8080/oauth/callback"
    )
    code = dict(parse_qsl(urlsplit(url).query))["code"]

    identity, _ = await fixed_user.exchange(
        code=code, redirect_uri="", code_verifier=verifier, nonce=nonce, state=state
    )

    assert identity.subject == "fixed_user:ada"
    assert identity.username == "ada"
    assert identity.email == "ada@example.com"
    assert identity.email_verified
    assert identity.groups == ["admins"]


async def test_a_code_expires_after_its_ttl(
    fixed_user: FixedUserProvider, clock: FakeClock
) -> None:
    url, state, verifier, _, nonce = await ProviderContract.begin(
        fixed_user, "http://127.0.0.1:8080/oauth/callback"
    )
    code = dict(parse_qsl(urlsplit(url).query))["code"]
    clock.advance(CONFIG.code_ttl + 1)

    with pytest.raises(UpstreamError) as caught:
        await fixed_user.exchange(
            code=code, redirect_uri="", code_verifier=verifier, nonce=nonce, state=state
        )

    assert caught.value.kind == "invalid_grant"

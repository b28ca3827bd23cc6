"""The built-in providers pass the provider contract plugin authors run: local with its
in-process code issue, oidc and google against the fake OIDC provider, github against the
fake GitHub. Each is built through the registry, as the daemon builds it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import parse_qsl, urlsplit

import pytest

from mcp_oauthd.clock import FakeClock
from mcp_oauthd.config.models import (
    GithubProviderConfig,
    GoogleProviderConfig,
    LocalProviderConfig,
    OidcProviderConfig,
)
from mcp_oauthd.providers import LocalProvider, Provider, build_provider
from mcp_oauthd.storage.memory import MemoryStorage
from mcp_oauthd.testing.fake_idp import FakeGitHub, FakeOidcProvider
from mcp_oauthd.testing.provider_contract import CompleteLogin, ProviderContract
from tests.conftest import DEMO_HASH

ISSUER = "http://127.0.0.1:8080"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def idp(clock: FakeClock) -> AsyncIterator[FakeOidcProvider]:
    async with FakeOidcProvider(clock=clock) as fake:
        yield fake


@pytest.fixture
async def github() -> AsyncIterator[FakeGitHub]:
    async with FakeGitHub() as fake:
        yield fake


async def started(config: object, clock: FakeClock) -> Provider:
    provider = build_provider(
        config,  # type: ignore[arg-type]
        issuer=ISSUER,
        storage=MemoryStorage(),
        clock=clock,
    )
    await provider.start()
    return provider


class TestLocalProvider(ProviderContract):
    @pytest.fixture
    async def provider(self, clock: FakeClock) -> AsyncIterator[Provider]:
        config = LocalProviderConfig.model_validate(
            {"users": [{"username": "alice", "password_hash": DEMO_HASH}]}
        )
        provider = await started(config, clock)
        yield provider
        await provider.close()

    @pytest.fixture
    def complete_upstream_login(self, provider: Provider) -> CompleteLogin:
        # What the /login form does once the password checks out.
        assert isinstance(provider, LocalProvider)
        local = provider

        async def login(authorization_url: str) -> dict[str, str]:
            state = dict(parse_qsl(urlsplit(authorization_url).query))["state"]
            user = local.config.users[0]
            return {"code": await local.issue_code(local.identity(user), state), "state": state}

        return login


class TestOidcProvider(ProviderContract):
    @pytest.fixture
    async def provider(self, idp: FakeOidcProvider, clock: FakeClock) -> AsyncIterator[Provider]:
        config = OidcProviderConfig(
            issuer=idp.issuer,
            client_id=idp.client_id,
            client_secret=idp.client_secret,
            allow_insecure_http=True,
        )
        provider = await started(config, clock)
        yield provider
        await provider.close()

    @pytest.fixture
    def complete_upstream_login(self, idp: FakeOidcProvider) -> CompleteLogin:
        return idp.login


class TestGoogleProvider(ProviderContract):
    @pytest.fixture
    async def provider(self, idp: FakeOidcProvider, clock: FakeClock) -> AsyncIterator[Provider]:
        config = GoogleProviderConfig.model_validate(
            {
                "client_id": idp.client_id,
                "client_secret": idp.client_secret,
                "issuer": idp.issuer,
                "allow_insecure_http": True,
            }
        )
        provider = await started(config, clock)
        yield provider
        await provider.close()

    @pytest.fixture
    def complete_upstream_login(self, idp: FakeOidcProvider) -> CompleteLogin:
        return idp.login


class TestGithubProvider(ProviderContract):
    @pytest.fixture
    async def provider(self, github: FakeGitHub, clock: FakeClock) -> AsyncIterator[Provider]:
        config = GithubProviderConfig.model_validate(
            {
                "client_id": github.client_id,
                "client_secret": github.client_secret,
                "base_url": github.base_url,
                "api_url": github.api_url,
                "allow_insecure_http": True,
            }
        )
        provider = await started(config, clock)
        yield provider
        await provider.close()

    @pytest.fixture
    def complete_upstream_login(self, github: FakeGitHub) -> CompleteLogin:
        return github.login

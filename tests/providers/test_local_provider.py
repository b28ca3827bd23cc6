from __future__ import annotations

from typing import Any

import pytest
from argon2 import PasswordHasher
from yarl import URL

from mcp_oauthd.clock import FakeClock
from mcp_oauthd.config.models import LocalProviderConfig, LocalUser
from mcp_oauthd.providers.base import Identity, UpstreamError, UpstreamTokens
from mcp_oauthd.providers.local import LocalProvider
from mcp_oauthd.storage.memory import MemoryStorage

ISSUER = "https://auth.example.com"
FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
ALICE_HASH = FAST.hash("correct horse")


@pytest.fixture
def provider(clock: FakeClock) -> LocalProvider:
    config = LocalProviderConfig(
        users=[
            LocalUser(
                username="alice",
                password_hash=ALICE_HASH,
                email="alice@example.com",
                name="Alice",
                groups=["staff"],
            ),
            LocalUser(username="bob", password_hash=FAST.hash("hunter2")),
        ]
    )
    return LocalProvider(config, ISSUER, MemoryStorage(), clock)


ALICE = Identity(
    subject="local:alice",
    username="alice",
    email="alice@example.com",
    email_verified=True,
    name="Alice",
    groups=["staff"],
)


async def redeem(
    provider: LocalProvider, code: str, **kwargs: Any
) -> tuple[Identity, UpstreamTokens]:
    return await provider.exchange(
        code=code, redirect_uri="unused", code_verifier="unused", nonce="unused", **kwargs
    )


async def test_the_authorization_url_is_our_login_page_with_only_the_state(
    provider: LocalProvider,
) -> None:
    url = await provider.authorization_url(
        redirect_uri="https://auth.example.com/oauth/callback",
        state="st&x=1",
        code_challenge="challenge",
        nonce="nonce",
    )
    assert url.startswith("https://auth.example.com/login?")
    assert dict(URL(url).query) == {"state": "st&x=1"}


async def test_the_login_url_keeps_the_issuer_path(clock: FakeClock) -> None:
    provider = LocalProvider(
        LocalProviderConfig(), "https://x.example/auth", MemoryStorage(), clock
    )
    url = await provider.authorization_url(
        redirect_uri="r", state="s", code_challenge="c", nonce="n"
    )
    assert url == "https://x.example/auth/login?state=s"


async def test_the_right_password_yields_the_users_identity(provider: LocalProvider) -> None:
    assert await provider.verify_password("alice", "correct horse") == ALICE


async def test_a_user_without_email_is_not_email_verified(provider: LocalProvider) -> None:
    identity = await provider.verify_password("bob", "hunter2")
    assert identity is not None
    assert identity.email is None
    assert identity.email_verified is False


@pytest.mark.parametrize(
    ("username", "password"),
    [("alice", "wrong"), ("alice", ""), ("nobody", "correct horse"), ("Alice", "correct horse")],
)
async def test_a_wrong_password_or_unknown_user_yields_nothing(
    provider: LocalProvider, username: str, password: str
) -> None:
    assert await provider.verify_password(username, password) is None


async def test_an_unknown_user_still_costs_a_password_verification(
    provider: LocalProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real = provider._hasher

    class Spy:
        def verify(self, hash: str, password: str) -> bool:
            calls.append(hash)
            return real.verify(hash, password)

    monkeypatch.setattr(provider, "_hasher", Spy())

    assert await provider.verify_password("nobody", "whatever") is None
    assert len(calls) == 1
    assert calls[0] != ALICE_HASH
    assert "m=1024,t=1,p=1" in calls[0]  # the dummy hash costs what real ones cost


async def test_a_local_code_yields_the_identity_and_an_opaque_token(
    provider: LocalProvider,
) -> None:
    code = await provider.issue_code(ALICE, "st-1")

    identity, tokens = await redeem(provider, code, state="st-1")

    assert identity == ALICE
    assert len(tokens.access_token) >= 43
    assert tokens.refresh_token is None
    assert tokens.expires_at is None


async def test_a_local_code_works_once(provider: LocalProvider) -> None:
    code = await provider.issue_code(ALICE, "st-1")
    await redeem(provider, code, state="st-1")

    with pytest.raises(UpstreamError) as caught:
        await redeem(provider, code, state="st-1")
    assert caught.value.kind == "invalid_grant"
    assert code not in str(caught.value)


async def test_a_local_code_issued_for_another_state_is_refused(provider: LocalProvider) -> None:
    code = await provider.issue_code(ALICE, "st-1")

    with pytest.raises(UpstreamError) as caught:
        await redeem(provider, code, state="st-2")
    assert caught.value.kind == "invalid_grant"


async def test_a_local_code_expires_after_a_minute(
    provider: LocalProvider, clock: FakeClock
) -> None:
    code = await provider.issue_code(ALICE, "st-1")
    clock.advance(61)

    with pytest.raises(UpstreamError):
        await redeem(provider, code)


async def test_an_unknown_local_code_is_refused(provider: LocalProvider) -> None:
    with pytest.raises(UpstreamError):
        await redeem(provider, "made-up")


async def test_local_codes_are_stored_only_as_a_hash(clock: FakeClock) -> None:
    storage = MemoryStorage()
    provider = LocalProvider(LocalProviderConfig(), ISSUER, storage, clock)
    code = await provider.issue_code(ALICE, "st")

    assert await storage.get_ephemeral("local_code", code, clock.now()) is None


async def test_local_refresh_returns_the_tokens_unchanged(provider: LocalProvider) -> None:
    tokens = UpstreamTokens(access_token="opaque")
    assert await provider.refresh(tokens) is tokens

"""The provider contract: what every identity provider, built in or plugged in, must do.

Run it from a test module of your own, against your provider and a fake of its upstream::

    import pytest
    from mcp_oauthd.testing.provider_contract import ProviderContract

    class TestMyProvider(ProviderContract):
        @pytest.fixture
        async def provider(self, fake_upstream):
            p = MyProvider(MyConfig(...), clock=FakeClock())
            await p.start()
            yield p
            await p.close()

        @pytest.fixture
        def complete_upstream_login(self, fake_upstream):
            # Follow the authorization URL as a browser would, let the user approve, and
            # return the query the upstream sends back to our callback.
            async def login(authorization_url: str) -> dict[str, str]:
                return await fake_upstream.approve(authorization_url)  # {"code", "state"}
            return login

The tests need pytest-asyncio (``asyncio_mode = "auto"``, or strict mode with
``pytest_asyncio.fixture`` on async fixtures). The ``provider`` fixture yields a fresh,
started provider for each test; ``complete_upstream_login(authorization_url)`` returns
``{"code": ..., "state": ...}``, the query our callback would receive. Override the
``redirect_uri`` fixture if your provider needs a particular callback URL.

What is checked (see the Provider protocol in ``mcp_oauthd.providers.base``):

- ``authorization_url`` is absolute, carries our ``state`` (which comes back unchanged)
  and nothing of the MCP client's request: no ``resource`` (RFC 8707), and any
  ``state``, ``code_challenge``, ``nonce`` or ``redirect_uri`` parameter has our value;
- ``exchange`` returns an ``Identity`` whose subject is ``"<type>:<upstream id>"`` and
  ``UpstreamTokens`` with an access token;
- a code works once, and only for the login it was issued to (our state and PKCE
  verifier); an unknown code raises ``UpstreamError``;
- ``refresh`` returns a token set or raises ``UpstreamError`` of a known kind;
- no exception message (nor any exception it chains) contains the code.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import get_args
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest

from mcp_oauthd.oauth.pkce import new_pair
from mcp_oauthd.providers.base import (
    Identity,
    Provider,
    UpstreamError,
    UpstreamErrorKind,
    UpstreamTokens,
)

__all__ = ["UPSTREAM_ERROR_KINDS", "CompleteLogin", "Login", "ProviderContract"]

#: Every ``UpstreamError.kind`` the daemon understands.
UPSTREAM_ERROR_KINDS: frozenset[str] = frozenset(get_args(UpstreamErrorKind))

#: ``complete_upstream_login(authorization_url) -> {"code": ..., "state": ...}``
CompleteLogin = Callable[[str], Awaitable[dict[str, str]]]

DEFAULT_REDIRECT_URI = "http://127.0.0.1:8080/oauth/callback"


@dataclass(frozen=True)
class Login:
    """One upstream login as the daemon drives it: our state, PKCE pair and nonce, the
    authorization URL the provider built and the code the upstream sent back."""

    state: str
    verifier: str
    challenge: str
    nonce: str
    url: str
    code: str


def _messages(exc: BaseException) -> str:
    """The text of an exception and of every exception it chains (what a log shows)."""
    seen: list[str] = []
    current: BaseException | None = exc
    while current is not None and len(seen) < 10:
        seen.append(f"{current!s} {current.args!r}")
        current = current.__cause__ or current.__context__
    return "\n".join(seen)


async def _outcome(call: Awaitable[UpstreamTokens]) -> UpstreamTokens | UpstreamError:
    """The result of ``call``, or the ``UpstreamError`` it raised."""
    try:
        return await call
    except UpstreamError as exc:
        return exc


class ProviderContract:
    """Subclass it; provide the ``provider`` and ``complete_upstream_login`` fixtures."""

    pytestmark = [pytest.mark.asyncio]

    # ----------------------------------------------------------------- fixtures
    @pytest.fixture
    async def provider(self) -> AsyncIterator[Provider]:
        raise NotImplementedError("a ProviderContract subclass must provide `provider`")
        yield  # type: ignore[unreachable, unused-ignore]  # noqa: PT022  (an async generator)

    @pytest.fixture
    def complete_upstream_login(self) -> CompleteLogin:
        raise NotImplementedError(
            "a ProviderContract subclass must provide `complete_upstream_login`"
        )

    @pytest.fixture
    def redirect_uri(self) -> str:
        """Our callback URL as the provider sees it."""
        return DEFAULT_REDIRECT_URI

    # ----------------------------------------------------------------- helpers
    @staticmethod
    async def begin(provider: Provider, redirect_uri: str) -> tuple[str, str, str, str, str]:
        """``authorization_url`` with fresh state, PKCE and nonce, as the daemon calls it;
        returns (url, state, verifier, challenge, nonce)."""
        state = secrets.token_urlsafe(32)
        nonce = secrets.token_urlsafe(24)
        verifier, challenge = new_pair()
        url = await provider.authorization_url(
            redirect_uri=redirect_uri, state=state, code_challenge=challenge, nonce=nonce
        )
        return url, state, verifier, challenge, nonce

    async def log_in(self, provider: Provider, complete: CompleteLogin, redirect_uri: str) -> Login:
        """Walk one upstream login up to (not including) the code redemption."""
        url, state, verifier, challenge, nonce = await self.begin(provider, redirect_uri)
        answer = await complete(url)
        assert "error" not in answer, f"the upstream login failed: {answer.get('error')}"
        assert answer.get("state") == state, "the upstream must send our state back unchanged"
        assert answer.get("code"), "the upstream sent no code back"
        return Login(state, verifier, challenge, nonce, url, answer["code"])

    @staticmethod
    async def redeem(
        provider: Provider,
        login: Login,
        redirect_uri: str,
        *,
        code: str | None = None,
        state: str | None = None,
        verifier: str | None = None,
    ) -> tuple[Identity, UpstreamTokens]:
        return await provider.exchange(
            code=login.code if code is None else code,
            redirect_uri=redirect_uri,
            code_verifier=login.verifier if verifier is None else verifier,
            nonce=login.nonce,
            state=login.state if state is None else state,
        )

    # ----------------------------------------------------------------- the contract
    async def test_the_provider_implements_the_protocol_under_a_name(
        self, provider: Provider
    ) -> None:
        assert isinstance(provider, Provider)
        assert isinstance(provider.name, str)
        assert provider.name

    async def test_the_authorization_url_is_absolute_and_carries_our_state(
        self, provider: Provider, complete_upstream_login: CompleteLogin, redirect_uri: str
    ) -> None:
        login = await self.log_in(provider, complete_upstream_login, redirect_uri)

        parts = urlsplit(login.url)
        assert parts.scheme in ("https", "http")
        assert parts.hostname
        assert login.state in unquote(login.url)

    async def test_the_authorization_url_carries_nothing_of_the_mcp_clients_request(
        self, provider: Provider, redirect_uri: str
    ) -> None:
        url, state, _, challenge, nonce = await self.begin(provider, redirect_uri)

        params = parse_qsl(urlsplit(url).query)
        names = [name for name, _ in params]
        # RFC 8707: the MCP resource stays with us; the upstream never sees it.
        assert "resource" not in names
        ours = {"state": state, "code_challenge": challenge, "nonce": nonce}
        for name, value in params:
            if name in ours:
                assert value == ours[name], f"{name} is not the one we gave"
            if name == "redirect_uri":
                assert value == redirect_uri
            if name == "code_challenge_method":
                assert value == "S256"

    async def test_a_login_yields_a_provider_scoped_identity_and_upstream_tokens(
        self, provider: Provider, complete_upstream_login: CompleteLogin, redirect_uri: str
    ) -> None:
        login = await self.log_in(provider, complete_upstream_login, redirect_uri)

        identity, tokens = await self.redeem(provider, login, redirect_uri)

        assert isinstance(identity, Identity)
        prefix = f"{provider.name}:"
        assert identity.subject.startswith(prefix), "the subject is '<type>:<upstream id>'"
        assert len(identity.subject) > len(prefix)
        assert isinstance(tokens, UpstreamTokens)
        assert tokens.access_token

    async def test_a_code_works_once(
        self, provider: Provider, complete_upstream_login: CompleteLogin, redirect_uri: str
    ) -> None:
        login = await self.log_in(provider, complete_upstream_login, redirect_uri)
        await self.redeem(provider, login, redirect_uri)

        with pytest.raises(UpstreamError) as caught:
            await self.redeem(provider, login, redirect_uri)

        assert caught.value.kind in UPSTREAM_ERROR_KINDS
        assert login.code not in _messages(caught.value)

    async def test_a_code_is_refused_under_another_logins_state_and_verifier(
        self, provider: Provider, complete_upstream_login: CompleteLogin, redirect_uri: str
    ) -> None:
        first = await self.log_in(provider, complete_upstream_login, redirect_uri)
        second = await self.log_in(provider, complete_upstream_login, redirect_uri)

        with pytest.raises(UpstreamError) as caught:
            await self.redeem(
                provider, first, redirect_uri, state=second.state, verifier=second.verifier
            )

        assert caught.value.kind in UPSTREAM_ERROR_KINDS
        assert first.code not in _messages(caught.value)

    async def test_an_unknown_code_raises_an_upstream_error_that_does_not_repeat_it(
        self, provider: Provider, complete_upstream_login: CompleteLogin, redirect_uri: str
    ) -> None:
        login = await self.log_in(provider, complete_upstream_login, redirect_uri)
        forged = "forged-" + secrets.token_urlsafe(24)

        with pytest.raises(UpstreamError) as caught:
            await self.redeem(provider, login, redirect_uri, code=forged)

        assert caught.value.kind in UPSTREAM_ERROR_KINDS
        assert forged not in _messages(caught.value)

    async def test_refresh_returns_a_token_set_or_a_known_upstream_error(
        self, provider: Provider, complete_upstream_login: CompleteLogin, redirect_uri: str
    ) -> None:
        login = await self.log_in(provider, complete_upstream_login, redirect_uri)
        _, tokens = await self.redeem(provider, login, redirect_uri)

        outcome = await _outcome(provider.refresh(tokens))

        if isinstance(outcome, UpstreamError):
            assert outcome.kind in UPSTREAM_ERROR_KINDS
            for secret in (tokens.access_token, tokens.refresh_token):
                assert secret is None or secret not in _messages(outcome)
        else:
            assert isinstance(outcome, UpstreamTokens)
            assert outcome.access_token

    async def test_a_dead_upstream_grant_is_an_invalid_grant_or_nothing_to_renew(
        self, provider: Provider
    ) -> None:
        dead = UpstreamTokens(
            access_token="dead-" + secrets.token_urlsafe(16),
            refresh_token="dead-" + secrets.token_urlsafe(16),
        )

        outcome = await _outcome(provider.refresh(dead))

        if isinstance(outcome, UpstreamError):
            # The daemon revokes its own grant on exactly this kind.
            assert outcome.kind == "invalid_grant"
            assert dead.refresh_token is not None
            assert dead.refresh_token not in _messages(outcome)
        else:
            # A provider without upstream refresh (e.g. ``local``) keeps what it has.
            assert isinstance(outcome, UpstreamTokens)

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from mcp_oauthd.clock import FakeClock
from mcp_oauthd.config.models import OidcProviderConfig
from mcp_oauthd.providers.base import Identity, UpstreamError, UpstreamTokens
from mcp_oauthd.providers.oidc import OidcProvider
from mcp_oauthd.testing.fake_idp import FakeOidcProvider

REDIRECT_URI = "http://127.0.0.1:8080/oauth/callback"
NONCE = "nonce-0123456789"


@pytest.fixture
async def idp(clock: FakeClock) -> AsyncIterator[FakeOidcProvider]:
    async with FakeOidcProvider(clock=clock) as fake:
        yield fake


def make_config(idp: FakeOidcProvider, **overrides: Any) -> OidcProviderConfig:
    data: dict[str, Any] = {
        "issuer": idp.issuer,
        "client_id": idp.client_id,
        "client_secret": idp.client_secret,
        "allow_insecure_http": True,
    }
    data.update(overrides)
    return OidcProviderConfig.model_validate(data)


@pytest.fixture
async def provider(idp: FakeOidcProvider, clock: FakeClock) -> AsyncIterator[OidcProvider]:
    p = OidcProvider(make_config(idp), clock)
    yield p
    await p.close()


async def log_in(
    provider: OidcProvider, idp: FakeOidcProvider, pkce: Any, *, nonce: str = NONCE
) -> tuple[Identity, UpstreamTokens]:
    url = await provider.authorization_url(
        redirect_uri=REDIRECT_URI, state="st-1", code_challenge=pkce.challenge, nonce=nonce
    )
    answer = await idp.login(url)
    assert answer["state"] == "st-1"
    return await provider.exchange(
        code=answer["code"], redirect_uri=REDIRECT_URI, code_verifier=pkce.verifier, nonce=nonce
    )


# ---------------------------------------------------------------------------- happy path
async def test_a_login_yields_the_users_identity_and_upstream_tokens(
    provider: OidcProvider, idp: FakeOidcProvider, pkce: Any, clock: FakeClock
) -> None:
    identity, tokens = await log_in(provider, idp, pkce)

    assert identity == Identity(
        subject="oidc:user-123",
        username="alice",
        email="alice@example.com",
        email_verified=True,
        name="Alice Example",
        groups=["engineering", "admins"],
    )
    assert tokens.access_token.startswith("fake-at-")
    assert tokens.refresh_token is not None
    assert tokens.expires_at == clock.now() + 3600
    assert tokens.id_token is not None


async def test_the_authorization_request_carries_our_pkce_state_and_nonce_and_nothing_else(
    provider: OidcProvider, idp: FakeOidcProvider, pkce: Any
) -> None:
    await log_in(provider, idp, pkce)

    params = idp.authorize_params[-1]
    assert params == {
        "response_type": "code",
        "client_id": idp.client_id,
        "redirect_uri": REDIRECT_URI,
        "scope": "openid email profile",
        "state": "st-1",
        "nonce": NONCE,
        "code_challenge": pkce.challenge,
        "code_challenge_method": "S256",
    }
    assert "resource" not in params
    assert idp.token_requests[-1].form["code_verifier"] == pkce.verifier


async def test_extra_authorize_params_are_sent_but_cannot_override_the_core_ones(
    idp: FakeOidcProvider, clock: FakeClock, pkce: Any
) -> None:
    config = make_config(
        idp, extra_authorize_params={"login_hint": "alice", "state": "attacker", "prompt": "login"}
    )
    provider = OidcProvider(config, clock)
    try:
        await log_in(provider, idp, pkce)
    finally:
        await provider.close()

    params = idp.authorize_params[-1]
    assert params["login_hint"] == "alice"
    assert params["prompt"] == "login"
    assert params["state"] == "st-1"


async def test_the_client_authenticates_with_basic_when_the_idp_allows_it(
    provider: OidcProvider, idp: FakeOidcProvider, pkce: Any
) -> None:
    await log_in(provider, idp, pkce)

    assert idp.last_client_auth == "client_secret_basic"
    assert "client_secret" not in idp.token_requests[-1].form


async def test_the_client_authenticates_in_the_body_when_only_post_is_supported(
    clock: FakeClock, pkce: Any
) -> None:
    async with FakeOidcProvider(
        clock=clock, token_endpoint_auth_methods=["client_secret_post"]
    ) as idp:
        provider = OidcProvider(make_config(idp), clock)
        try:
            await log_in(provider, idp, pkce)
        finally:
            await provider.close()

        assert idp.last_client_auth == "client_secret_post"


async def test_a_public_client_sends_only_its_client_id(clock: FakeClock, pkce: Any) -> None:
    async with FakeOidcProvider(clock=clock, client_secret=None) as idp:
        provider = OidcProvider(make_config(idp, client_secret=None), clock)
        try:
            identity, _ = await log_in(provider, idp, pkce)
        finally:
            await provider.close()

        assert identity.subject == "oidc:user-123"
        assert idp.last_client_auth == "none"
        assert "Authorization" not in idp.token_requests[-1].headers


async def test_groups_are_read_from_the_configured_claim_even_when_nested(
    idp: FakeOidcProvider, clock: FakeClock, pkce: Any
) -> None:
    idp.claims["realm_access"] = {"roles": ["mcp-users"]}
    provider = OidcProvider(make_config(idp, groups_claim="realm_access.roles"), clock)
    try:
        identity, _ = await log_in(provider, idp, pkce)
    finally:
        await provider.close()

    assert identity.groups == ["mcp-users"]


async def test_userinfo_claims_fill_in_what_the_id_token_lacks(
    provider: OidcProvider, idp: FakeOidcProvider, pkce: Any
) -> None:
    del idp.claims["groups"]
    idp.userinfo_claims = {"sub": "user-123", "groups": ["from-userinfo"], "name": "Other"}

    identity, _ = await log_in(provider, idp, pkce)

    assert identity.groups == ["from-userinfo"]
    assert identity.name == "Alice Example"  # the signed ID token wins


async def test_a_userinfo_answer_for_another_subject_is_refused(
    provider: OidcProvider, idp: FakeOidcProvider, pkce: Any
) -> None:
    idp.userinfo_claims = {"sub": "someone-else", "email": "mallory@evil.example"}

    with pytest.raises(UpstreamError) as caught:
        await log_in(provider, idp, pkce)
    assert caught.value.kind == "server_error"


# ---------------------------------------------------------------------------- ID token defects
@pytest.mark.parametrize(
    "knob",
    ["sign_with_wrong_key", "wrong_iss", "wrong_aud", "wrong_nonce", "alg_none", "sign_hs256"],
)
async def test_an_id_token_with_a_defect_is_refused(
    provider: OidcProvider, idp: FakeOidcProvider, pkce: Any, knob: str
) -> None:
    setattr(idp, knob, True)

    with pytest.raises(UpstreamError) as caught:
        await log_in(provider, idp, pkce)
    assert caught.value.kind == "server_error"


async def test_an_expired_id_token_is_refused(clock: FakeClock, pkce: Any) -> None:
    idp_clock = FakeClock(clock.now() - 2 * 3600)  # the IdP's tokens are two hours old
    async with FakeOidcProvider(clock=idp_clock) as idp:
        provider = OidcProvider(make_config(idp), clock)
        try:
            with pytest.raises(UpstreamError, match="expired") as caught:
                await log_in(provider, idp, pkce)
        finally:
            await provider.close()
    assert caught.value.kind == "server_error"


async def test_an_id_token_flagged_expired_by_the_idp_is_refused(
    provider: OidcProvider, idp: FakeOidcProvider, pkce: Any
) -> None:
    idp.expired = True

    with pytest.raises(UpstreamError, match="expired"):
        await log_in(provider, idp, pkce)


async def test_a_small_clock_difference_within_the_skew_is_tolerated(
    clock: FakeClock, pkce: Any
) -> None:
    async with FakeOidcProvider(clock=FakeClock(clock.now() + 30)) as idp:
        provider = OidcProvider(make_config(idp, clock_skew=60), clock)
        try:
            identity, _ = await log_in(provider, idp, pkce)
        finally:
            await provider.close()
    assert identity.subject == "oidc:user-123"


async def test_an_id_token_issued_in_the_future_beyond_the_skew_is_refused(
    clock: FakeClock, pkce: Any
) -> None:
    async with FakeOidcProvider(clock=FakeClock(clock.now() + 300)) as idp:
        provider = OidcProvider(make_config(idp, clock_skew=60), clock)
        try:
            with pytest.raises(UpstreamError, match="future"):
                await log_in(provider, idp, pkce)
        finally:
            await provider.close()


async def test_an_id_token_not_yet_valid_is_refused(
    provider: OidcProvider, idp: FakeOidcProvider, pkce: Any, clock: FakeClock
) -> None:
    idp.extra_id_token_claims = {"nbf": clock.now() + 600}

    with pytest.raises(UpstreamError, match="not yet valid"):
        await log_in(provider, idp, pkce)


async def test_several_audiences_without_azp_are_refused(
    provider: OidcProvider, idp: FakeOidcProvider, pkce: Any
) -> None:
    idp.extra_id_token_claims = {"aud": [idp.client_id, "another-client"]}

    with pytest.raises(UpstreamError, match="authorized party"):
        await log_in(provider, idp, pkce)


async def test_several_audiences_with_our_azp_are_accepted(
    provider: OidcProvider, idp: FakeOidcProvider, pkce: Any
) -> None:
    idp.extra_id_token_claims = {"aud": [idp.client_id, "another-client"], "azp": idp.client_id}

    identity, _ = await log_in(provider, idp, pkce)
    assert identity.subject == "oidc:user-123"


async def test_an_azp_naming_another_client_is_refused(
    provider: OidcProvider, idp: FakeOidcProvider, pkce: Any
) -> None:
    idp.extra_id_token_claims = {"azp": "another-client"}

    with pytest.raises(UpstreamError, match="authorized party"):
        await log_in(provider, idp, pkce)


async def test_an_id_token_without_the_nonce_is_refused(
    provider: OidcProvider, idp: FakeOidcProvider, pkce: Any
) -> None:
    url = await provider.authorization_url(
        redirect_uri=REDIRECT_URI, state="s", code_challenge=pkce.challenge, nonce=NONCE
    )
    # The IdP did not receive our nonce (e.g. it was stripped on the way).
    answer = await idp.login(url.replace(f"nonce={NONCE}", "x=1"))

    with pytest.raises(UpstreamError, match="nonce"):
        await provider.exchange(
            code=answer["code"],
            redirect_uri=REDIRECT_URI,
            code_verifier=pkce.verifier,
            nonce=NONCE,
        )


# ---------------------------------------------------------------------------- discovery, issuer
async def test_a_discovery_document_for_another_issuer_is_refused(
    provider: OidcProvider, idp: FakeOidcProvider
) -> None:
    idp.discovery_issuer = idp.issuer + "/"

    with pytest.raises(UpstreamError, match="issuer") as caught:
        await provider.start()
    assert caught.value.kind == "server_error"


@pytest.mark.parametrize(
    ("issuer", "allow_insecure_http"),
    [
        ("http://idp.example.com", True),
        ("http://127.0.0.1:9999", False),
        ("ftp://idp.example.com", True),
    ],
)
def test_a_non_https_issuer_is_refused_unless_loopback_and_explicitly_allowed(
    issuer: str, allow_insecure_http: bool, clock: FakeClock
) -> None:
    config = OidcProviderConfig(
        issuer=issuer, client_id="c", allow_insecure_http=allow_insecure_http
    )
    with pytest.raises(ValueError, match="https"):
        OidcProvider(config, clock)


# ---------------------------------------------------------------------------- key rollover
async def test_a_new_kid_triggers_one_jwks_refetch_and_the_login_succeeds(
    provider: OidcProvider, idp: FakeOidcProvider, pkce: Any
) -> None:
    await provider.start()
    assert idp.jwks_fetches == 1

    idp.rotate_key()
    identity, _ = await log_in(provider, idp, pkce)

    assert identity.subject == "oidc:user-123"
    assert idp.jwks_fetches == 2


async def test_jwks_refetches_for_unknown_kids_are_rate_limited(
    provider: OidcProvider, idp: FakeOidcProvider, pkce: Any, clock: FakeClock
) -> None:
    await provider.start()
    idp.rotate_key()
    await log_in(provider, idp, pkce)
    assert idp.jwks_fetches == 2

    idp.rotate_key()  # a second rollover right away: no refetch allowed yet
    with pytest.raises(UpstreamError, match="signature"):
        await log_in(provider, idp, pkce)
    assert idp.jwks_fetches == 2

    clock.advance(61)
    identity, _ = await log_in(provider, idp, pkce)
    assert identity.subject == "oidc:user-123"
    assert idp.jwks_fetches == 3


async def test_a_bad_signature_under_a_known_kid_does_not_refetch_the_jwks(
    provider: OidcProvider, idp: FakeOidcProvider, pkce: Any
) -> None:
    await provider.start()
    idp.sign_with_wrong_key = True

    with pytest.raises(UpstreamError, match="signature"):
        await log_in(provider, idp, pkce)
    assert idp.jwks_fetches == 1


async def test_the_jwks_is_refetched_when_its_cache_is_old(
    provider: OidcProvider, idp: FakeOidcProvider, pkce: Any, clock: FakeClock
) -> None:
    await provider.start()
    clock.advance(3601)

    await log_in(provider, idp, pkce)
    assert idp.jwks_fetches == 2


# ---------------------------------------------------------------------------- upstream trouble
async def test_a_token_endpoint_answering_500_is_unavailable(
    provider: OidcProvider, idp: FakeOidcProvider, pkce: Any
) -> None:
    idp.fail_paths = {"/token"}

    with pytest.raises(UpstreamError) as caught:
        await log_in(provider, idp, pkce)
    assert caught.value.kind == "unavailable"


async def test_an_unreachable_idp_is_unavailable(clock: FakeClock) -> None:
    idp = FakeOidcProvider(clock=clock)
    await idp.start()
    issuer = idp.issuer
    await idp.stop()  # nothing listens on that port any more
    provider = OidcProvider(
        OidcProviderConfig(issuer=issuer, client_id="c", allow_insecure_http=True), clock
    )
    try:
        with pytest.raises(UpstreamError) as caught:
            await provider.start()
    finally:
        await provider.close()
    assert caught.value.kind == "unavailable"


async def test_an_idp_that_goes_away_mid_flow_is_unavailable(
    provider: OidcProvider, idp: FakeOidcProvider, pkce: Any
) -> None:
    url = await provider.authorization_url(
        redirect_uri=REDIRECT_URI, state="s", code_challenge=pkce.challenge, nonce=NONCE
    )
    answer = await idp.login(url)
    await idp.stop()

    with pytest.raises(UpstreamError) as caught:
        await provider.exchange(
            code=answer["code"],
            redirect_uri=REDIRECT_URI,
            code_verifier=pkce.verifier,
            nonce=NONCE,
        )
    assert caught.value.kind == "unavailable"


async def test_an_idp_that_does_not_answer_in_time_is_unavailable(
    idp: FakeOidcProvider, clock: FakeClock
) -> None:
    provider = OidcProvider(make_config(idp, timeout=0.2), clock)
    idp.hang = True
    try:
        with pytest.raises(UpstreamError) as caught:
            await provider.start()
    finally:
        await provider.close()
    assert caught.value.kind == "unavailable"


async def test_a_code_redeemed_twice_is_invalid_grant_and_the_error_names_no_secret(
    provider: OidcProvider, idp: FakeOidcProvider, pkce: Any
) -> None:
    url = await provider.authorization_url(
        redirect_uri=REDIRECT_URI, state="s", code_challenge=pkce.challenge, nonce=NONCE
    )
    code = (await idp.login(url))["code"]
    args = {
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": pkce.verifier,
        "nonce": NONCE,
    }
    await provider.exchange(**args)

    with pytest.raises(UpstreamError) as caught:
        await provider.exchange(**args)
    assert caught.value.kind == "invalid_grant"
    message = str(caught.value)
    assert code not in message
    assert pkce.verifier not in message
    assert str(idp.client_secret) not in message


async def test_a_wrong_code_verifier_is_refused(
    provider: OidcProvider, idp: FakeOidcProvider, pkce: Any
) -> None:
    url = await provider.authorization_url(
        redirect_uri=REDIRECT_URI, state="s", code_challenge=pkce.challenge, nonce=NONCE
    )
    code = (await idp.login(url))["code"]

    with pytest.raises(UpstreamError) as caught:
        await provider.exchange(
            code=code, redirect_uri=REDIRECT_URI, code_verifier="x" * 43, nonce=NONCE
        )
    assert caught.value.kind == "invalid_grant"


async def test_an_access_denied_answer_is_access_denied(
    provider: OidcProvider, idp: FakeOidcProvider, pkce: Any
) -> None:
    idp.token_error = "access_denied"

    with pytest.raises(UpstreamError) as caught:
        await log_in(provider, idp, pkce)
    assert caught.value.kind == "access_denied"


async def test_an_invalid_client_answer_is_a_server_error(
    idp: FakeOidcProvider, clock: FakeClock, pkce: Any
) -> None:
    provider = OidcProvider(make_config(idp, client_secret="wrong-secret"), clock)
    try:
        with pytest.raises(UpstreamError) as caught:
            await log_in(provider, idp, pkce)
    finally:
        await provider.close()
    assert caught.value.kind == "server_error"
    assert "wrong-secret" not in str(caught.value)


# ---------------------------------------------------------------------------- refresh
async def test_refresh_renews_the_access_token_and_keeps_the_refresh_token(
    provider: OidcProvider, idp: FakeOidcProvider, pkce: Any, clock: FakeClock
) -> None:
    _, tokens = await log_in(provider, idp, pkce)
    clock.advance(1800)

    renewed = await provider.refresh(tokens)

    assert renewed.access_token != tokens.access_token
    assert renewed.refresh_token == tokens.refresh_token
    assert renewed.expires_at == clock.now() + 3600
    assert renewed.id_token == tokens.id_token
    assert idp.token_requests[-1].form["grant_type"] == "refresh_token"


async def test_refresh_takes_a_rotated_refresh_token_and_a_verified_new_id_token(
    provider: OidcProvider, idp: FakeOidcProvider, pkce: Any
) -> None:
    _, tokens = await log_in(provider, idp, pkce)
    idp.rotate_refresh_tokens = True
    idp.id_token_on_refresh = True

    renewed = await provider.refresh(tokens)

    assert renewed.refresh_token not in (None, tokens.refresh_token)
    assert renewed.id_token not in (None, tokens.id_token)


async def test_refresh_refuses_a_new_id_token_with_a_bad_signature(
    provider: OidcProvider, idp: FakeOidcProvider, pkce: Any
) -> None:
    _, tokens = await log_in(provider, idp, pkce)
    idp.id_token_on_refresh = True
    idp.sign_with_wrong_key = True

    with pytest.raises(UpstreamError) as caught:
        await provider.refresh(tokens)
    assert caught.value.kind == "server_error"


async def test_refresh_of_a_dead_upstream_grant_is_invalid_grant(
    provider: OidcProvider, idp: FakeOidcProvider, pkce: Any
) -> None:
    _, tokens = await log_in(provider, idp, pkce)
    idp.refresh_invalid_grant = True

    with pytest.raises(UpstreamError) as caught:
        await provider.refresh(tokens)
    assert caught.value.kind == "invalid_grant"
    assert str(tokens.refresh_token) not in str(caught.value)


async def test_refresh_while_the_idp_fails_is_unavailable(
    provider: OidcProvider, idp: FakeOidcProvider, pkce: Any
) -> None:
    _, tokens = await log_in(provider, idp, pkce)
    idp.fail_with_500 = True

    with pytest.raises(UpstreamError) as caught:
        await provider.refresh(tokens)
    assert caught.value.kind == "unavailable"


async def test_refresh_without_a_refresh_token_returns_the_tokens_unchanged(
    provider: OidcProvider,
) -> None:
    tokens = UpstreamTokens(access_token="at")

    assert await provider.refresh(tokens) is tokens

"""A hypothesis state machine over the token lifecycle, against the real services.

Rules issue codes through the real browser leg (AuthorizeService: authorize, consent,
local login, callback), redeem and replay them, refresh and replay refresh tokens inside
and outside the grace window, revoke access and refresh tokens, and move a fake clock.
A model of what must be live is kept alongside; after every step the invariants hold:

- a code is redeemed at most once, and a replay revokes what the first use issued;
- a revoked or expired access token never looks up as active (what introspection and
  ``/auth/verify`` answer), and one the model says is live always does;
- a family has at most one live (unrotated, unexpired) refresh token; a rotated one is
  honoured only inside the grace window, with the same successor; a replay outside it
  kills the family.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from mcp_oauthd.app import create_app
from mcp_oauthd.clock import FakeClock
from mcp_oauthd.http import keys
from mcp_oauthd.oauth.client_auth import ClientCredentials
from mcp_oauthd.oauth.errors import InvalidGrant
from mcp_oauthd.oauth.pkce import new_pair
from mcp_oauthd.oauth.tokens import token_hash
from mcp_oauthd.security.audit import Auditor
from mcp_oauthd.service.authorize import Page, Redirect
from mcp_oauthd.service.introspect import find_access_token
from mcp_oauthd.storage.memory import MemoryStorage
from mcp_oauthd.testing.browser import query_of
from tests.conftest import base_config
from tests.resource.conftest import local_provider

REDIRECT = "http://127.0.0.1:5555/callback"
CODE_TTL, ACCESS_TTL, REFRESH_TTL, GRACE = 60, 300, 1800, 30
CLI = ClientCredentials(client_id="cli", secret=None, method="none")
# Waits around every boundary: the grace window, the code, access and refresh lifetimes.
WAITS = st.sampled_from([0, 0, 1, GRACE, GRACE + 1, CODE_TTL, ACCESS_TTL, REFRESH_TTL])


@dataclass
class Code:
    value: str
    verifier: str
    issued_at: float
    attempts: int = 0
    family: Family | None = None  # what its first successful redemption created


@dataclass
class Family:
    revoked: bool = False
    access: dict[str, float] = field(default_factory=dict)  # token -> expires_at
    revoked_access: set[str] = field(default_factory=set)
    refresh: dict[str, Refresh] = field(default_factory=dict)


@dataclass
class Refresh:
    value: str
    family: Family
    expires_at: float
    rotated_at: float | None = None
    successor: str | None = None


class TokenLifecycle(RuleBasedStateMachine):
    codes = Bundle("codes")
    refresh_tokens = Bundle("refresh_tokens")
    access_tokens = Bundle("access_tokens")

    @initialize(target=refresh_tokens)
    def start(self) -> Refresh:
        """A daemon's services on a fresh storage, and one signed-in client to begin with
        (so short runs already refresh, replay and revoke)."""
        self.loop = asyncio.new_event_loop()
        self.clock = FakeClock()
        config = base_config(
            8080,
            provider=local_provider(),
            tokens={
                "code_ttl": CODE_TTL,
                "access_token_ttl": ACCESS_TTL,
                "refresh_token_ttl": REFRESH_TTL,
                "refresh_grace_period": GRACE,
            },
            consent={"remember": False},
            observability={"metrics": {"enabled": False}},
        )
        app = create_app(
            config, storage=MemoryStorage(), clock=self.clock, auditor=Auditor(), run_gc=False
        )
        self.services = app[keys.SERVICES]
        self.authorize = app[keys.AUTHORIZE]
        self.tokens = app[keys.TOKENS]
        self.resource = config.default_resource
        self.families: list[Family] = []
        self.run(self.services.storage.open())
        first: Refresh = self.redeem(self.issue())
        return first

    def teardown(self) -> None:
        if hasattr(self, "loop"):
            self.loop.close()

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def now(self) -> float:
        return self.clock.now()

    # ------------------------------------------------------------------ issue
    async def _browser_leg(self) -> tuple[str, str]:
        verifier, challenge = new_pair()
        browser = "browser-" + verifier[:8]
        request = await self.authorize.validate(
            {
                "response_type": "code",
                "client_id": "cli",
                "redirect_uri": REDIRECT,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
                "state": "s",
            }
        )
        page = await self.authorize.start(request, browser, None)
        assert isinstance(page, Page) and page.template == "consent"
        flow_id = page.context["flow_id"]
        to_login = await self.authorize.decide(
            flow_id, page.context["csrf_token"], "approve", False, browser
        )
        assert isinstance(to_login, Redirect)
        state = query_of(to_login.location)["state"]
        provider = self.services.provider
        identity = provider.identity(provider.config.users[0])  # type: ignore[attr-defined]
        upstream_code = await provider.issue_code(identity, state)  # type: ignore[attr-defined]
        done = await self.authorize.callback({"code": upstream_code, "state": state}, browser)
        assert isinstance(done, Redirect)
        return query_of(done.location)["code"], verifier

    @rule(target=codes)
    def issue(self) -> Code:
        value, verifier = self.run(self._browser_leg())
        return Code(value, verifier, self.now())

    # ------------------------------------------------------------------ redeem
    def _grant(self, form: dict[str, str]) -> dict[str, Any] | InvalidGrant:
        try:
            body: dict[str, Any] = self.run(self.tokens.grant(form, CLI))
        except InvalidGrant as exc:
            return exc
        return body

    def _record(self, family: Family, body: dict[str, Any]) -> None:
        family.access[body["access_token"]] = self.now() + body["expires_in"]
        refresh = Refresh(body["refresh_token"], family, self.now() + REFRESH_TTL)
        family.refresh[refresh.value] = refresh

    @rule(target=refresh_tokens, code=codes, wait=WAITS)
    def redeem_later(self, code: Code, wait: int) -> Any:
        self.clock.advance(wait)
        return self.redeem(code)

    def redeem(self, code: Code) -> Any:
        first_attempt = code.attempts == 0
        fresh = self.now() < code.issued_at + CODE_TTL
        code.attempts += 1
        result = self._grant(
            {
                "grant_type": "authorization_code",
                "code": code.value,
                "code_verifier": code.verifier,
                "redirect_uri": REDIRECT,
            }
        )
        if first_attempt and fresh:
            assert isinstance(result, dict), result
            family = Family()
            self.families.append(family)
            code.family = family
            self._record(family, result)
            return family.refresh[result["refresh_token"]]
        # Invariant: a code is redeemed at most once; a replay revokes the first grant.
        assert isinstance(result, InvalidGrant)
        if not first_attempt and code.family is not None:
            code.family.revoked = True
        return multiple()

    # ------------------------------------------------------------------ refresh
    @rule(target=refresh_tokens, token=refresh_tokens, wait=WAITS)
    def refresh(self, token: Refresh, wait: int) -> Any:
        self.clock.advance(wait)
        family = token.family
        now = self.now()
        result = self._grant(
            {"grant_type": "refresh_token", "refresh_token": token.value, "client_id": "cli"}
        )
        if family.revoked:
            assert isinstance(result, InvalidGrant)
            return multiple()
        if token.rotated_at is None:
            if token.expires_at <= now:
                assert isinstance(result, InvalidGrant)  # idle expiry; the family lives on
                return multiple()
            assert isinstance(result, dict), result
            token.rotated_at, token.successor = now, result["refresh_token"]
            self._record(family, result)
            return family.refresh[result["refresh_token"]]
        if now - token.rotated_at <= GRACE:
            # Inside the grace window: the successor already issued, not a fork.
            assert isinstance(result, dict), result
            assert result["refresh_token"] == token.successor
            return multiple()
        assert isinstance(result, InvalidGrant)
        family.revoked = True  # reuse outside the grace window kills the family
        return multiple()

    @rule(target=refresh_tokens, token=refresh_tokens, wait=WAITS)
    def refresh_then_replay(self, token: Refresh, wait: int) -> Any:
        """Two processes sharing one credential: both refresh it, `wait` seconds apart."""
        successor = self.refresh(token, 0)
        self.refresh(token, wait)
        return successor

    # ------------------------------------------------------------------ revoke
    @rule(token=refresh_tokens)
    def revoke_refresh(self, token: Refresh) -> None:
        self.run(self.tokens.revoke({"token": token.value}, CLI))
        token.family.revoked = True

    @precondition(lambda self: any(f.access for f in self.families))
    @rule(data=st.data())
    def revoke_access(self, data: st.DataObject) -> None:
        family = data.draw(st.sampled_from([f for f in self.families if f.access]))
        token = data.draw(st.sampled_from(sorted(family.access)))
        self.run(self.tokens.revoke({"token": token}, CLI))
        family.revoked_access.add(token)

    # ------------------------------------------------------------------ time
    @rule(seconds=WAITS)
    def advance(self, seconds: int) -> None:
        self.clock.advance(seconds)

    # ------------------------------------------------------------------ invariants
    @invariant()
    def access_tokens_are_active_exactly_when_the_model_says(self) -> None:
        if not hasattr(self, "families"):
            return
        now = self.now()
        for family in self.families:
            for token, expires_at in family.access.items():
                found = self.run(find_access_token(self.services, token, self.resource, now))
                live = not family.revoked and token not in family.revoked_access
                if not live or expires_at <= now:
                    # Revoked or expired: never active.
                    assert found is None, "a revoked or expired token looked up as active"
                else:
                    assert found is not None, "a live access token was lost"

    @invariant()
    def a_family_has_at_most_one_live_refresh_token(self) -> None:
        if not hasattr(self, "families"):
            return
        now = self.now()
        for family in self.families:
            live = 0
            for token in family.refresh.values():
                record = self.run(self.services.storage.get_refresh_token(token_hash(token.value)))
                if record is None:
                    assert family.revoked or token.expires_at <= now or token.rotated_at
                    continue
                grant = self.run(self.services.storage.get_grant(record.grant_id))
                assert grant is not None
                if grant.revoked_at is not None:
                    assert family.revoked
                    continue
                assert not family.revoked, "a revoked family kept its refresh tokens"
                if record.rotated_at is None and record.expires_at > now:
                    live += 1
            assert live <= 1


TokenLifecycle.TestCase.settings = settings(
    # Examples take milliseconds; 30 missed boundary cases in mutation tests, 100 did not.
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_the_token_lifecycle_holds_its_invariants = TokenLifecycle.TestCase

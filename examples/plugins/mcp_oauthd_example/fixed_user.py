"""``fixed_user``: every login is one configured user, with no password.

For a personal deployment where reaching the daemon is already proof of who you are: an
mcp-oauthd on your laptop's loopback, inside a tailnet, or behind an SSH tunnel. MCP
clients still go through the whole OAuth flow (consent page, PKCE, our own tokens,
refresh, revocation); only the upstream login is replaced by an automatic approval.

It is a real provider in the sense of the contract: ``authorization_url`` issues a
one-time code, kept (as its SHA-256) in the daemon's own storage through the ephemeral
API and bound to our upstream ``state`` and PKCE challenge, and sends the browser straight
back to our callback with it; ``exchange`` redeems that code exactly once. So it works
with several replicas on shared storage, like the built-in ``local`` provider::

    provider:
      type: fixed_user
      username: ada
      email: ada@example.com
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Literal

from pydantic import Field
from yarl import URL

from mcp_oauthd.clock import Clock
from mcp_oauthd.config.models import Duration, PluginConfig
from mcp_oauthd.plugins import ProviderPlugin
from mcp_oauthd.providers.base import Identity, UpstreamError, UpstreamTokens
from mcp_oauthd.storage.base import Storage

#: The ephemeral record kind of our one-time codes (kinds never share keys).
CODE_KIND = "fixed_user_code"


class FixedUserConfig(PluginConfig):
    """The ``provider:`` section for ``type: fixed_user``."""

    type: Literal["fixed_user"] = "fixed_user"
    username: str = Field(min_length=1, description="Who every login is (required).")
    email: str | None = Field(None, description="The user's e-mail address.")
    email_verified: bool = Field(
        False, description="Whether the e-mail counts as verified (the access policy uses it)."
    )
    name: str | None = Field(None, description="Display name.")
    groups: list[str] = Field(default_factory=list, description="Groups, for the access policy.")
    code_ttl: Duration = Field(60, gt=0, le=600, description="Lifetime of a one-time code.")


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _s256(verifier: str) -> str:
    """The PKCE S256 challenge of a verifier (RFC 7636 §4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class FixedUserProvider:
    """Implements ``mcp_oauthd.providers.base.Provider``."""

    name = "fixed_user"

    def __init__(self, config: FixedUserConfig, storage: Storage, clock: Clock) -> None:
        self.config = config
        self._storage = storage
        self._clock = clock

    async def start(self) -> None:
        """Nothing to load."""

    async def close(self) -> None:
        """Nothing to release."""

    def identity(self) -> Identity:
        return Identity(
            subject=f"{self.name}:{self.config.username}",
            username=self.config.username,
            email=self.config.email,
            email_verified=bool(self.config.email) and self.config.email_verified,
            name=self.config.name,
            groups=list(self.config.groups),
        )

    async def authorization_url(
        self, *, redirect_uri: str, state: str, code_challenge: str, nonce: str
    ) -> str:
        # The "upstream" approves at once: issue the code now and send the browser back to
        # our callback with it and our state (RFC 6749 §4.1.2), nothing else.
        code = secrets.token_urlsafe(32)
        record = {"state": state, "code_challenge": code_challenge}
        expires_at = self._clock.now() + self.config.code_ttl
        await self._storage.put_ephemeral(CODE_KIND, _sha256(code), record, expires_at)
        return str(URL(redirect_uri).update_query(code=code, state=state))

    async def exchange(
        self,
        *,
        code: str,
        redirect_uri: str,
        code_verifier: str,
        nonce: str,
        state: str | None = None,
    ) -> tuple[Identity, UpstreamTokens]:
        # take_ephemeral is atomic: of two redemptions of one code exactly one gets it.
        record = await self._storage.take_ephemeral(CODE_KIND, _sha256(code), self._clock.now())
        if record is None:
            raise UpstreamError("invalid_grant", "fixed_user: unknown, used or expired code")
        # The code is bound to the login it was issued to: our state and our PKCE verifier
        # (RFC 7636 §4.6). Compared in constant time; the messages never repeat the code.
        same_state = state is not None and hmac.compare_digest(
            str(record.get("state", "")).encode(), state.encode()
        )
        same_pkce = hmac.compare_digest(
            str(record.get("code_challenge", "")).encode(), _s256(code_verifier).encode()
        )
        if not (same_state and same_pkce):
            raise UpstreamError("invalid_grant", "fixed_user: the code belongs to another login")
        # There is no upstream API to call: the upstream access token is a random
        # placeholder (RFC 8693 token exchange would hand it out; do not enable
        # allow_upstream_token for this provider).
        return self.identity(), UpstreamTokens(access_token=secrets.token_urlsafe(32))

    async def refresh(self, tokens: UpstreamTokens) -> UpstreamTokens:
        return tokens  # nothing upstream can expire


def _build(
    config: FixedUserConfig, *, issuer: str, storage: Storage, clock: Clock
) -> FixedUserProvider:
    return FixedUserProvider(config, storage, clock)


#: What the ``fixed_user`` entry point names (see this distribution's pyproject.toml).
PLUGIN = ProviderPlugin(name="fixed_user", config_model=FixedUserConfig, factory=_build)

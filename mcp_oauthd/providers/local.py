"""The built-in ``local`` provider: users from the config, argon2-hashed passwords.

It plays the upstream IdP in-process so the daemon's flow is the same for every
provider: ``authorization_url`` sends the browser to our own ``/login`` page carrying only
the upstream ``state``; the login handler calls ``verify_password`` and then
``issue_code``, and redirects to ``/oauth/callback`` with that code and state; the
callback calls ``exchange`` like for any other provider.

Local codes are random, single-use, live 60 seconds, are stored only as their SHA-256 hash
(ephemeral kind ``local_code``) and are bound to the state they were issued for.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import secrets
from typing import Any

from argon2 import PasswordHasher, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError
from argon2.profiles import RFC_9106_LOW_MEMORY
from yarl import URL

from mcp_oauthd.clock import Clock
from mcp_oauthd.config.models import LocalProviderConfig, LocalUser
from mcp_oauthd.plugins import ProviderPlugin
from mcp_oauthd.providers.base import Identity, UpstreamError, UpstreamTokens
from mcp_oauthd.storage.base import Storage

CODE_KIND = "local_code"
CODE_TTL = 60.0


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class LocalProvider:
    name = "local"

    def __init__(
        self, config: LocalProviderConfig, issuer: str, storage: Storage, clock: Clock
    ) -> None:
        self.config = config
        self._users: dict[str, LocalUser] = {u.username: u for u in config.users}
        self._login_url = URL(issuer).joinpath("login")
        self._storage = storage
        self._clock = clock
        self._hasher = PasswordHasher()
        self._dummy_hash: str | None = None

    async def start(self) -> None:
        await self._dummy()

    async def close(self) -> None:
        """Nothing to release."""

    async def _dummy(self) -> str:
        """A hash to verify against for unknown users, with the parameters the real ones
        use, so the time taken does not tell which usernames exist."""
        if self._dummy_hash is None:
            hasher = PasswordHasher.from_parameters(RFC_9106_LOW_MEMORY)
            if self.config.users:
                with contextlib.suppress(InvalidHashError, ValueError):
                    hasher = PasswordHasher.from_parameters(
                        extract_parameters(self.config.users[0].password_hash)
                    )
            self._dummy_hash = await asyncio.to_thread(hasher.hash, secrets.token_urlsafe(16))
        return self._dummy_hash

    # ------------------------------------------------------------------ login page API
    def identity(self, user: LocalUser) -> Identity:
        return Identity(
            subject=f"local:{user.username}",
            username=user.username,
            email=user.email,
            email_verified=bool(user.email) and user.email_verified,
            name=user.name,
            groups=list(user.groups),
        )

    async def verify_password(self, username: str, password: str) -> Identity | None:
        """The user's identity if the password is right, else None (never says which)."""
        user = self._users.get(username)
        stored = user.password_hash if user is not None else await self._dummy()
        try:
            ok: bool = await asyncio.to_thread(self._hasher.verify, stored, password)
        except (VerificationError, InvalidHashError):
            ok = False
        if not ok or user is None:
            return None
        return self.identity(user)

    async def issue_code(self, identity: Identity, state: str) -> str:
        """A one-time code for ``/oauth/callback``, bound to ``state``, valid 60 s."""
        code = secrets.token_urlsafe(32)
        data: dict[str, Any] = {"identity": identity.model_dump(mode="json"), "state": state}
        await self._storage.put_ephemeral(
            CODE_KIND, _hash(code), data, self._clock.now() + CODE_TTL
        )
        return code

    # ------------------------------------------------------------------ provider API
    async def authorization_url(
        self, *, redirect_uri: str, state: str, code_challenge: str, nonce: str
    ) -> str:
        return str(self._login_url.with_query(state=state))

    async def exchange(
        self,
        *,
        code: str,
        redirect_uri: str,
        code_verifier: str,
        nonce: str,
        state: str | None = None,
    ) -> tuple[Identity, UpstreamTokens]:
        """Redeem a local code once. It must come back with the ``state`` it was issued
        for: a code replayed under another flow's state is refused."""
        data = await self._storage.take_ephemeral(CODE_KIND, _hash(code), self._clock.now())
        if data is None:
            raise UpstreamError("invalid_grant", "local: unknown, used or expired code")
        if state is None or not hmac.compare_digest(
            str(data.get("state", "")).encode(), state.encode()
        ):
            raise UpstreamError("invalid_grant", "local: code was issued for another state")
        identity = Identity.model_validate(data["identity"])
        return identity, UpstreamTokens(access_token=secrets.token_urlsafe(32))

    async def refresh(self, tokens: UpstreamTokens) -> UpstreamTokens:
        return tokens


def _build(
    config: LocalProviderConfig, *, issuer: str, storage: Storage, clock: Clock
) -> LocalProvider:
    return LocalProvider(config, issuer, storage, clock)


# Registered as the ``local`` entry point of ``mcp_oauthd.providers`` (pyproject.toml).
PLUGIN = ProviderPlugin(name="local", config_model=LocalProviderConfig, factory=_build)

"""The provider contract. A provider knows only its upstream identity provider.

The daemon drives every provider through the same two steps, so one flow serves them all:

1. ``authorization_url(...)``: where to send the browser, carrying *our* upstream
   ``state``, *our* PKCE challenge (RFC 7636) and, for OIDC, *our* ``nonce``. The MCP
   client's ``resource``, ``state`` and PKCE are never forwarded upstream.
2. ``exchange(...)``: called from ``/oauth/callback`` with the upstream ``code``; returns
   who logged in and the upstream token set (kept encrypted, server-side).

``refresh(...)`` renews the upstream token set; a dead upstream grant raises
``UpstreamError`` with ``kind="invalid_grant"`` so the daemon revokes its own grant.
"""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

UpstreamErrorKind = Literal["access_denied", "invalid_grant", "unavailable", "server_error"]


class UpstreamError(Exception):
    """An upstream failure. ``kind`` decides what the client sees:

    - ``access_denied``: the user or the IdP refused (the client gets ``access_denied``);
    - ``invalid_grant``: the upstream grant or code is dead (refresh fails, grant revoked);
    - ``unavailable``: timeout, connection error, 5xx (``temporarily_unavailable``, 503);
    - ``server_error``: anything else the IdP did wrong (bad signature, bad nonce, ...).

    The message is for logs only and must never contain a token, code or secret.
    """

    def __init__(self, kind: UpstreamErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind: UpstreamErrorKind = kind


class Identity(BaseModel):
    """Who logged in, as the upstream vouches for it."""

    model_config = ConfigDict(frozen=True)

    subject: str  # stable, provider-scoped id, e.g. "oidc:<sub>", "github:<id>", "local:<name>"
    username: str | None = None
    email: str | None = None
    email_verified: bool = False
    name: str | None = None
    groups: list[str] = Field(default_factory=list)
    github_orgs: list[str] = Field(default_factory=list)


class UpstreamTokens(BaseModel):
    """The upstream token set. Stored only encrypted; never logged."""

    model_config = ConfigDict(frozen=True)

    access_token: str
    token_type: str = "Bearer"
    refresh_token: str | None = None
    expires_at: float | None = None  # seconds since epoch, None when the IdP did not say
    scope: str | None = None
    id_token: str | None = None


@runtime_checkable
class Provider(Protocol):
    name: str  # the config ``type``: "local", "oidc", "google", "github", ...

    async def start(self) -> None:
        """Load what the provider needs before serving (OIDC discovery, JWKS). May raise
        ``UpstreamError`` if the upstream is unreachable; the daemon then retries lazily."""

    async def close(self) -> None:
        """Release HTTP sessions."""

    async def authorization_url(
        self, *, redirect_uri: str, state: str, code_challenge: str, nonce: str
    ) -> str:
        """The upstream authorization URL (built with a URL builder, never formatting)."""

    async def exchange(
        self,
        *,
        code: str,
        redirect_uri: str,
        code_verifier: str,
        nonce: str,
        state: str | None = None,
    ) -> tuple[Identity, UpstreamTokens]:
        """Redeem the upstream code; verify the ID token (signature, iss, aud, azp,
        nonce, exp/iat with clock skew) where there is one. ``state`` is our upstream state
        the code came back with, for providers that bind codes to it (``local``).
        Raises ``UpstreamError``."""

    async def refresh(self, tokens: UpstreamTokens) -> UpstreamTokens:
        """Renew the upstream token set. Raises ``UpstreamError("invalid_grant")`` when the
        upstream grant is gone, ``UpstreamError("unavailable")`` on network trouble."""

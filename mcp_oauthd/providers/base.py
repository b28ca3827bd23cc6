"""The provider contract. A provider knows only its upstream identity provider.

The daemon drives every provider through the same two steps, so one flow serves them all:

1. ``authorization_url(...)``: where to send the browser, carrying *our* upstream
   ``state``, *our* PKCE challenge (RFC 7636) and, for OIDC, *our* ``nonce``. The MCP
   client's ``resource``, ``state`` and PKCE are never forwarded upstream.
2. ``exchange(...)``: called from ``/oauth/callback`` with the upstream ``code``; returns
   who logged in and the upstream token set (kept encrypted, server-side).

``refresh(...)`` renews the upstream token set; a dead upstream grant raises
``UpstreamError`` with ``kind="invalid_grant"`` so the daemon revokes its own grant.

A provider is built once per daemon by the factory of its plugin descriptor
(``mcp_oauthd.plugins.ProviderPlugin``; the built-ins register the same way) and is
shared by every request: its methods run concurrently and must not keep per-login
state on ``self``. What a login needs between ``authorization_url`` and ``exchange``
lives upstream or in the storage's ephemeral records (``put_ephemeral`` /
``take_ephemeral``), so several replicas can serve one login. The only exception a
provider raises on purpose is ``UpstreamError``; anything else is a bug and becomes a
``server_error``. Time comes from the injected clock, never the wall clock.
``mcp_oauthd.testing.provider_contract.ProviderContract`` checks these rules; see
docs/extending.md.
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
    """Who logged in, as the upstream vouches for it. Everything here may reach MCP
    servers (introspection, ``/auth/verify`` headers) and the access policy; report only
    what the upstream verified (``email_verified`` false when unsure)."""

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
    """What every identity provider implements, built in or plugged in."""

    name: str  # the config ``type``: "local", "oidc", "google", "github", ...; must equal it

    async def start(self) -> None:
        """Load what the provider needs before serving (OIDC discovery, JWKS). Called once,
        at start-up, before any other call. May raise ``UpstreamError`` if the upstream is
        unreachable: the daemon logs it and serves anyway, so a provider must then load
        what it needs on first use instead."""

    async def close(self) -> None:
        """Release HTTP sessions and other resources. Called once, at shutdown; must not
        raise."""

    async def authorization_url(
        self, *, redirect_uri: str, state: str, code_challenge: str, nonce: str
    ) -> str:
        """Where to send the browser to log in upstream: an absolute URL, built with a URL
        builder (never string formatting), that leads the browser back to
        ``redirect_uri`` (our ``/oauth/callback``) with ``code`` and the very ``state``
        given here (RFC 6749 §4.1.2).

        ``state`` is ours: random, single-use, bound to the browser. Send it upstream
        unchanged. Send ``code_challenge`` (S256, RFC 7636 §4.3) and, for OIDC, ``nonce``
        when the upstream supports them. Never put anything of the MCP client's request
        (its ``state``, PKCE, ``resource``, redirect URI) into the URL. May raise
        ``UpstreamError`` (e.g. ``unavailable`` when discovery fails): the client then
        gets the matching OAuth error."""

    async def exchange(
        self,
        *,
        code: str,
        redirect_uri: str,
        code_verifier: str,
        nonce: str,
        state: str | None = None,
    ) -> tuple[Identity, UpstreamTokens]:
        """Redeem the upstream ``code`` the callback received and say who logged in.

        Send ``redirect_uri`` and ``code_verifier`` with the redemption when the upstream
        uses them; verify the ID token (signature, iss, aud, azp, nonce, exp/iat with clock
        skew) where there is one. ``state`` is our upstream state the code came back
        with, for providers that bind codes to it (``local``).

        Returns an ``Identity`` whose ``subject`` is stable and provider-scoped
        (``"<type>:<upstream id>"``, never an e-mail address, which can change hands) and
        the upstream token set. A code works at most once: redeeming it again, or an
        unknown or expired code, raises ``UpstreamError("invalid_grant")``. A refusal
        raises ``access_denied``, network trouble ``unavailable``, anything else
        ``server_error``. No message ever contains the code or a token."""

    async def refresh(self, tokens: UpstreamTokens) -> UpstreamTokens:
        """Renew the upstream token set; called when it is near expiry and its grant is
        used. Returns the new set (keep ``refresh_token`` if the upstream sent no new one),
        or ``tokens`` unchanged when there is nothing to renew.

        Raises ``UpstreamError("invalid_grant")`` when the upstream grant is gone (the
        daemon then revokes its own grant), ``UpstreamError("unavailable")`` on network
        trouble (the client may retry), ``server_error`` otherwise."""

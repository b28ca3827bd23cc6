"""Upstream identity providers and the factory that builds the configured one."""

from __future__ import annotations

from mcp_oauthd.clock import Clock
from mcp_oauthd.config.models import (
    GithubProviderConfig,
    GoogleProviderConfig,
    LocalProviderConfig,
    OidcProviderConfig,
    ProviderConfig,
)
from mcp_oauthd.providers._http import SessionFactory
from mcp_oauthd.providers.base import Identity, Provider, UpstreamError, UpstreamTokens
from mcp_oauthd.providers.github import GithubProvider
from mcp_oauthd.providers.google import GoogleProvider
from mcp_oauthd.providers.local import LocalProvider
from mcp_oauthd.providers.oidc import OidcProvider
from mcp_oauthd.storage.base import Storage

__all__ = [
    "GithubProvider",
    "GoogleProvider",
    "Identity",
    "LocalProvider",
    "OidcProvider",
    "Provider",
    "UpstreamError",
    "UpstreamTokens",
    "build_provider",
]


def build_provider(
    config: ProviderConfig,
    *,
    issuer: str,
    storage: Storage,
    clock: Clock,
    session_factory: SessionFactory | None = None,
) -> Provider:
    """The provider for ``config``. HTTP providers create their session lazily and close it
    in ``close()``; ``session_factory`` overrides how that session is made."""
    if isinstance(config, LocalProviderConfig):
        return LocalProvider(config, issuer, storage, clock)
    if isinstance(config, GoogleProviderConfig):
        return GoogleProvider(config, clock, session_factory)
    if isinstance(config, OidcProviderConfig):
        return OidcProvider(config, clock, session_factory)
    if isinstance(config, GithubProviderConfig):
        return GithubProvider(config, clock, session_factory)
    raise ValueError(f"unknown provider type {getattr(config, 'type', '?')!r}")

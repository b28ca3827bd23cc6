"""Upstream identity providers and the factory that builds the configured one."""

from __future__ import annotations

from typing import Any

from mcp_oauthd import plugins
from mcp_oauthd.clock import Clock
from mcp_oauthd.config.models import BuiltinProviderConfig, PluginConfig
from mcp_oauthd.plugins import PluginError
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
    config: BuiltinProviderConfig | PluginConfig,
    *,
    issuer: str,
    storage: Storage,
    clock: Clock,
    session_factory: SessionFactory | None = None,
) -> Provider:
    """The provider for ``config``, built by the factory its type registers (built-in or
    plugin: one path, see ``mcp_oauthd.plugins``). HTTP providers create their session
    lazily and close it in ``close()``; ``session_factory`` overrides how that session is
    made (built-in HTTP providers only). Raises ``PluginError``."""
    plugin = plugins.providers.get(config.type)
    if not isinstance(config, plugin.config_model):
        raise PluginError(
            f"provider type {config.type!r} expects a {plugin.config_model.__name__} section, "
            f"not a {type(config).__name__}"
        )
    if session_factory is None:
        provider = plugin.factory(config, issuer=issuer, storage=storage, clock=clock)
    else:
        factory: Any = plugin.factory  # the built-in HTTP providers take this test hook
        provider = factory(
            config, issuer=issuer, storage=storage, clock=clock, session_factory=session_factory
        )
    if not isinstance(provider, Provider) or provider.name != config.type:
        raise PluginError(
            f"the factory of provider type {config.type!r} built a {type(provider).__name__} "
            f"named {getattr(provider, 'name', None)!r}; it must implement the Provider "
            f"protocol with name {config.type!r}"
        )
    return provider

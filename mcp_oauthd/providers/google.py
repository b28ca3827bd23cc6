"""Google: the OIDC provider plus Google's quirks.

- ``access_type=offline`` and ``prompt=consent`` so Google issues a refresh token (it
  issues one only on a consented offline request);
- ``hd=<domain>`` when ``hosted_domain`` is set. The parameter only pre-selects an account
  in Google's chooser; the security check is the ``hd`` claim of the ID token, which must
  equal the configured domain (consumer accounts have no ``hd`` claim at all);
- a verified email is required (``email_verified`` true);
- Google writes ``iss`` with or without the scheme (``accounts.google.com``).
"""

from __future__ import annotations

from typing import Any

from mcp_oauthd.clock import Clock
from mcp_oauthd.config.models import GoogleProviderConfig, OidcProviderConfig
from mcp_oauthd.plugins import ProviderPlugin
from mcp_oauthd.providers._http import SessionFactory
from mcp_oauthd.providers.base import UpstreamError
from mcp_oauthd.providers.oidc import OidcProvider

GOOGLE_ISSUER = "https://accounts.google.com"


class GoogleProvider(OidcProvider):
    name = "google"
    subject_prefix = "google"

    def __init__(
        self,
        config: GoogleProviderConfig,
        clock: Clock,
        session_factory: SessionFactory | None = None,
        **kwargs: Any,
    ) -> None:
        self.google_config = config
        params = {"access_type": "offline", "prompt": "consent"}
        if config.hosted_domain:
            params["hd"] = config.hosted_domain
        oidc = OidcProviderConfig(
            issuer=config.issuer,
            client_id=config.client_id,
            client_secret=config.client_secret,
            scopes=list(config.scopes),
            extra_authorize_params=params,
            clock_skew=config.clock_skew,
            timeout=config.timeout,
            allow_insecure_http=config.allow_insecure_http,
        )
        kwargs.setdefault("use_userinfo", False)  # the ID token carries what we need
        super().__init__(oidc, clock, session_factory, **kwargs)

    def accepted_issuers(self) -> tuple[str, ...]:
        if self.config.issuer == GOOGLE_ISSUER:
            return (GOOGLE_ISSUER, "accounts.google.com")
        return (self.config.issuer,)

    def check_claims(self, claims: dict[str, Any]) -> None:
        domain = self.google_config.hosted_domain
        hd = claims.get("hd")
        if domain and (not isinstance(hd, str) or hd.lower() != domain.lower()):
            raise UpstreamError(
                "access_denied", "google: the account is not in the configured hosted domain"
            )
        if not isinstance(claims.get("email"), str) or claims.get("email_verified") is not True:
            raise UpstreamError("access_denied", "google: the account has no verified email")


def _build(
    config: GoogleProviderConfig,
    *,
    issuer: str,
    storage: object,
    clock: Clock,
    session_factory: SessionFactory | None = None,
) -> GoogleProvider:
    return GoogleProvider(config, clock, session_factory)


# Registered as the ``google`` entry point of ``mcp_oauthd.providers`` (pyproject.toml).
PLUGIN = ProviderPlugin(name="google", config_model=GoogleProviderConfig, factory=_build)

"""Discovery documents: RFC 8414 AS metadata, OIDC discovery, RFC 9728 PRM.

The issuer string from the config is used byte-for-byte; endpoint URLs are the issuer
followed by the endpoint path, so an issuer with a path (``https://h/auth``) puts every
endpoint under that path too.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mcp_oauthd.config.models import Config, ResourceConfig

AUTHORIZE_PATH = "/oauth/authorize"
TOKEN_PATH = "/oauth/token"
REVOKE_PATH = "/oauth/revoke"
INTROSPECT_PATH = "/oauth/introspect"
REGISTER_PATH = "/oauth/register"
JWKS_PATH = "/oauth/jwks"
CONSENT_PATH = "/oauth/consent"
CALLBACK_PATH = "/oauth/callback"
LOGIN_PATH = "/login"

AS_WELL_KNOWN = "/.well-known/oauth-authorization-server"
OIDC_WELL_KNOWN = "/.well-known/openid-configuration"
PRM_WELL_KNOWN = "/.well-known/oauth-protected-resource"


def issuer_path(issuer: str) -> str:
    """The path component of the issuer ('' for a bare host)."""
    return urlsplit(issuer).path.rstrip("/")


def endpoint(issuer: str, path: str) -> str:
    return issuer + path


def authorization_server_metadata(
    config: Config,
    *,
    registration_enabled: bool = False,
    introspection_enabled: bool = False,
    cimd_enabled: bool = False,
) -> dict[str, Any]:
    issuer = config.issuer
    auth_methods = ["client_secret_basic", "client_secret_post", "none"]
    scopes = sorted({scope for r in config.resources for scope in r.scopes})
    meta: dict[str, Any] = {
        "issuer": issuer,
        "authorization_endpoint": endpoint(issuer, AUTHORIZE_PATH),
        "token_endpoint": endpoint(issuer, TOKEN_PATH),
        "revocation_endpoint": endpoint(issuer, REVOKE_PATH),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        # OAuth 2.1 §4.1.1 / MCP authorization: PKCE is required, S256 only.
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": scopes,
        # RFC 9207 §3: we send `iss` in every authorization response.
        "authorization_response_iss_parameter_supported": True,
        "subject_types_supported": ["public"],
    }
    if registration_enabled:
        meta["registration_endpoint"] = endpoint(issuer, REGISTER_PATH)
    if any(r.allow_upstream_token for r in config.resources):
        # RFC 8693 §2: resource servers exchange a user's token for the upstream one.
        meta["grant_types_supported"] = [
            *meta["grant_types_supported"],
            "urn:ietf:params:oauth:grant-type:token-exchange",
        ]
    if introspection_enabled:
        meta["introspection_endpoint"] = endpoint(issuer, INTROSPECT_PATH)
        meta["introspection_endpoint_auth_methods_supported"] = [
            "client_secret_basic",
            "client_secret_post",
        ]
    if config.tokens.format == "jwt":
        meta["jwks_uri"] = endpoint(issuer, JWKS_PATH)
    if cimd_enabled:
        meta["client_id_metadata_document_supported"] = True
    return meta


def resource_metadata_url(resource_uri: str) -> str:
    """RFC 9728 §3.1: insert the well-known segment between host and path."""
    parts = urlsplit(resource_uri)
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme, parts.netloc, PRM_WELL_KNOWN + path, "", ""))


def protected_resource_metadata(config: Config, resource: ResourceConfig) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "resource": resource.uri,
        "authorization_servers": [config.issuer],
        "scopes_supported": list(resource.scopes),
        "bearer_methods_supported": ["header"],
    }
    if resource.name:
        meta["resource_name"] = resource.name
    if config.tokens.format == "jwt":
        meta["jwks_uri"] = endpoint(config.issuer, JWKS_PATH)
    return meta


def find_resource_by_path(
    config: Config, path: str, host: str | None = None
) -> ResourceConfig | None:
    """The resource whose URI path is ``path`` (RFC 9728 path-inserted lookup)."""
    path = path.rstrip("/")
    candidates = [r for r in config.resources if urlsplit(r.uri).path.rstrip("/") == path]
    if len(candidates) > 1 and host:
        by_host = [r for r in candidates if urlsplit(r.uri).netloc.lower() == host.lower()]
        if by_host:
            return by_host[0]
    if candidates:
        return candidates[0]
    if not path:
        return config.default_resource
    return None

"""Client metadata (RFC 7591 §2): validation and defaults, without any framework.

Used for dynamic registration requests and for Client ID Metadata Documents. The
defaults follow what real MCP clients send (they rarely send ``scope`` or
``application_type``; VS Code registers ``http://127.0.0.1:33418/``; Cursor and VS Code
use ``cursor://`` / ``vscode://``; Claude Code a loopback URI with a random port):

- ``token_endpoint_auth_method``: ``client_secret_basic`` when omitted (RFC 7591 §2); a
  metadata document defaults to ``none`` and may not use a shared secret at all
  (draft-ietf-oauth-client-id-metadata-document §4.1).
- ``grant_types``: ``authorization_code`` and ``refresh_token`` when omitted. RFC 7591 §2
  defaults to ``authorization_code`` only, but MCP clients that omit it still expect a
  refresh token; §3.2.1 lets the server provision defaults, and the response echoes them.
- ``response_types``: ``code`` only; ``authorization_code`` requires ``code`` and vice
  versa (RFC 7591 §2.1).
- ``application_type`` (OIDC Dynamic Registration §2): when omitted, ``native`` if any
  redirect URI is loopback or a private-use scheme, else ``web``; the redirect rules that
  go with it live in ``redirects.validate``.
- ``scope``: optional; scopes this server does not know are dropped (§3.2.1: the server
  may replace requested values). Without any known scope the client is not restricted.
- Cosmetic fields (``client_uri``, ``logo_uri``, ``policy_uri``, ``tos_uri``,
  ``contacts``, ``software_id``, ``software_version``) are kept when well-formed and
  dropped otherwise; unknown fields are ignored (RFC 7591 §2: the server MUST ignore
  metadata it does not understand).
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

from mcp_oauthd.oauth import redirects, scopes
from mcp_oauthd.oauth.errors import InvalidClientMetadata, InvalidRedirectUri, InvalidScope
from mcp_oauthd.oauth.redirects import ApplicationType, RedirectPolicy

AUTH_METHODS = ("client_secret_basic", "client_secret_post", "none")
GRANT_TYPES = ("authorization_code", "refresh_token")
RESPONSE_TYPES = ("code",)
DEFAULT_GRANT_TYPES = ("authorization_code", "refresh_token")
MAX_REDIRECT_URIS = 20
MAX_NAME_LENGTH = 200
MAX_FIELD_LENGTH = 2000
MAX_CONTACTS = 10
COSMETIC_URIS = ("client_uri", "logo_uri", "policy_uri", "tos_uri")
COSMETIC_STRINGS = ("software_id", "software_version")


@dataclass(frozen=True)
class ClientMetadata:
    """Validated client metadata with every default filled in."""

    redirect_uris: list[str]
    token_endpoint_auth_method: str
    grant_types: list[str]
    response_types: list[str]
    application_type: ApplicationType
    client_name: str | None = None
    scope: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_public(self) -> bool:
        return self.token_endpoint_auth_method == "none"

    def to_response(self) -> dict[str, Any]:
        """The registered metadata, as RFC 7591 §3.2.1 returns it."""
        body: dict[str, Any] = {
            "redirect_uris": list(self.redirect_uris),
            "token_endpoint_auth_method": self.token_endpoint_auth_method,
            "grant_types": list(self.grant_types),
            "response_types": list(self.response_types),
            "application_type": self.application_type,
        }
        if self.client_name is not None:
            body["client_name"] = self.client_name
        if self.scope is not None:
            body["scope"] = self.scope
        body.update(self.extra)
        return body

    def fingerprint(self, *salt: str) -> str:
        """Equal for registrations that behave identically: loopback ports, which match
        any port anyway, and the order of lists do not count."""
        canonical = self.to_response()
        canonical["redirect_uris"] = sorted(
            {redirects.port_agnostic(u) for u in self.redirect_uris}
        )
        canonical["grant_types"] = sorted(self.grant_types)
        text = json.dumps([canonical, *salt], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def _fail(description: str) -> InvalidClientMetadata:
    return InvalidClientMetadata(description)


def _string_list(raw: Mapping[str, Any], name: str) -> list[str] | None:
    value = raw.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(f"{name} must be an array of strings")
    return list(dict.fromkeys(cast(list[str], value)))


def _optional_string(raw: Mapping[str, Any], name: str, max_length: int) -> str | None:
    value = raw.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _fail(f"{name} must be a string")
    if len(value) > max_length:
        raise _fail(f"{name} must be at most {max_length} characters")
    return value


def _clean_name(raw: Mapping[str, Any]) -> str | None:
    name = _optional_string(raw, "client_name", MAX_NAME_LENGTH)
    if name is None:
        return None
    # Control and format characters (C*: bidi overrides, zero-width joiners, ...) let a
    # name display as something else on the consent page.
    if any(unicodedata.category(ch).startswith("C") for ch in name):
        raise _fail("client_name must not contain control characters")
    name = " ".join(name.split())
    return name or None


def _is_https_url(value: object) -> bool:
    if not isinstance(value, str) or len(value) > MAX_FIELD_LENGTH:
        return False
    if any(ch.isspace() for ch in value) or "\\" in value:
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme == "https" and bool(parts.hostname) and "@" not in parts.netloc


def _cosmetic(raw: Mapping[str, Any]) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    for name in COSMETIC_URIS:
        if _is_https_url(raw.get(name)):
            extra[name] = raw[name]
    for name in COSMETIC_STRINGS:
        value = raw.get(name)
        if isinstance(value, str) and 0 < len(value) <= MAX_NAME_LENGTH:
            extra[name] = value
    contacts = raw.get("contacts")
    if isinstance(contacts, list):
        kept = [
            c
            for c in contacts[:MAX_CONTACTS]
            if isinstance(c, str) and 0 < len(c) <= MAX_NAME_LENGTH and not c.isspace()
        ]
        if kept:
            extra["contacts"] = kept
    return extra


def _scope(raw: Mapping[str, Any], known_scopes: Iterable[str]) -> str | None:
    value = _optional_string(raw, "scope", MAX_FIELD_LENGTH)
    if value is None:
        return None
    try:
        requested = scopes.parse(value)
    except InvalidScope:
        raise _fail("scope must be a space-separated list of scope tokens") from None
    known = set(known_scopes)
    kept = [s for s in requested if s in known]
    return scopes.fmt(kept) if kept else None


def _application_type(raw: Mapping[str, Any], uris: list[str]) -> ApplicationType:
    value = raw.get("application_type")
    if value is None:
        return "native" if any(redirects.is_native_uri(u) for u in uris) else "web"
    if value == "web":
        return "web"
    if value == "native":
        return "native"
    raise _fail("application_type must be web or native")


def parse_client_metadata(
    raw: object,
    *,
    policy: RedirectPolicy,
    known_scopes: Iterable[str],
    document: bool = False,
) -> ClientMetadata:
    """Validate client metadata; raise ``InvalidClientMetadata`` / ``InvalidRedirectUri``.

    ``document=True`` applies the Client ID Metadata Document rules (``client_name``
    required, public clients only, no secret in the document).
    """
    if not isinstance(raw, dict):
        raise _fail("the client metadata must be a JSON object")
    data = cast(dict[str, Any], raw)

    uris = _string_list(data, "redirect_uris")
    if not uris:
        # RFC 7591 §2: redirect_uris is required for redirect-based flows, and the code
        # flow is the only one this server offers.
        raise InvalidRedirectUri("redirect_uris must list at least one redirect URI")
    if len(uris) > MAX_REDIRECT_URIS:
        raise InvalidRedirectUri(f"at most {MAX_REDIRECT_URIS} redirect URIs may be registered")

    method = data.get("token_endpoint_auth_method")
    if method is None:
        method = "none" if document else "client_secret_basic"
    if not isinstance(method, str) or method not in AUTH_METHODS:
        raise _fail("token_endpoint_auth_method must be one of " + ", ".join(AUTH_METHODS))
    if document:
        # CIMD §4.1: no shared secret can exist between a document and this server.
        if method != "none":
            raise _fail("a client metadata document must use token_endpoint_auth_method none")
        if "client_secret" in data or "client_secret_expires_at" in data:
            raise _fail("a client metadata document must not contain a client_secret")

    grant_types = _string_list(data, "grant_types")
    if grant_types is None:
        grant_types = list(DEFAULT_GRANT_TYPES)
    unsupported = [g for g in grant_types if g not in GRANT_TYPES]
    if unsupported:
        raise _fail("grant_types may only contain authorization_code and refresh_token")
    if "authorization_code" not in grant_types:
        raise _fail("grant_types must include authorization_code")

    response_types = _string_list(data, "response_types")
    if response_types is None:
        response_types = list(RESPONSE_TYPES)
    if not response_types or any(r not in RESPONSE_TYPES for r in response_types):
        raise _fail("response_types may only contain code")

    application_type = _application_type(data, uris)
    for uri in uris:
        try:
            redirects.validate(uri, policy, application_type)
        except InvalidRedirectUri as exc:
            shown = uri if len(uri) <= 200 else uri[:200] + "..."
            raise InvalidRedirectUri(f"{exc.description} ({shown})") from None

    name = _clean_name(data)
    if document and not name:
        raise _fail("a client metadata document must have a client_name")
    return ClientMetadata(
        redirect_uris=uris,
        token_endpoint_auth_method=method,
        grant_types=grant_types,
        response_types=response_types,
        application_type=application_type,
        client_name=name,
        scope=_scope(data, known_scopes),
        extra=_cosmetic(data),
    )

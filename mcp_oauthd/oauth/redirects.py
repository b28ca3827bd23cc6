"""Redirect URI rules, in one place (RFC 6749 §3.1.2, RFC 8252 §7, RFC 9700 §4.1).

- Registered URIs must be absolute, without fragment or userinfo; https, or http on a
  loopback host (RFC 8252 §7.3), or a private-use scheme when the policy allows
  (RFC 8252 §7.1). Schemes that execute or read content (``javascript``, ``data``, ...)
  are refused always.
- A requested URI matches a registered one by exact string comparison (RFC 9700 §4.1.3),
  except that loopback URIs match ignoring the port (RFC 8252 §7.3: the port is chosen
  by the native app at request time).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from mcp_oauthd.config.models import is_loopback_host
from mcp_oauthd.oauth.errors import InvalidRedirectUri

DANGEROUS_SCHEMES = frozenset(
    {
        "javascript",
        "data",
        "file",
        "vbscript",
        "blob",
        "about",
        "filesystem",
        "view-source",
        "chrome",
        "chrome-extension",
        "ms-settings",
        "jar",
        "ftp",
        "ws",
        "wss",
        "mailto",
        "tel",
        "sms",
    }
)
_SCHEME = re.compile(r"^[a-z][a-z0-9+.\-]*$")
LOOPBACK_LITERALS = frozenset({"localhost", "127.0.0.1", "[::1]"})


@dataclass(frozen=True)
class RedirectPolicy:
    allow_custom_schemes: bool = True
    allow_http: bool = False


def _split(uri: str) -> SplitResult:
    if not isinstance(uri, str) or not uri or len(uri) > 2000:
        raise InvalidRedirectUri("redirect_uri must be a non-empty string under 2000 characters")
    if any(ch.isspace() or ord(ch) < 0x20 for ch in uri) or "\\" in uri:
        raise InvalidRedirectUri("redirect_uri must not contain whitespace or backslashes")
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise InvalidRedirectUri("redirect_uri is not a valid URI") from None
    return parts


def is_loopback_uri(uri: str) -> bool:
    try:
        parts = urlsplit(uri)
        return parts.scheme == "http" and is_loopback_host(parts.hostname)
    except ValueError:
        return False


def validate(uri: str, policy: RedirectPolicy) -> None:
    """Check a redirect URI at registration/config time."""
    parts = _split(uri)
    scheme = parts.scheme.lower()
    if not scheme or not _SCHEME.match(scheme):
        raise InvalidRedirectUri("redirect_uri must be an absolute URI")
    if "#" in uri:
        # RFC 6749 §3.1.2: the endpoint URI MUST NOT include a fragment component.
        raise InvalidRedirectUri("redirect_uri must not contain a fragment")
    if scheme in DANGEROUS_SCHEMES:
        raise InvalidRedirectUri(f"the {scheme}: scheme is not allowed for redirect URIs")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise InvalidRedirectUri("redirect_uri must not contain user information")
    if scheme == "https":
        if not parts.hostname:
            raise InvalidRedirectUri("an https redirect_uri needs a host")
        return
    if scheme == "http":
        if not parts.hostname:
            raise InvalidRedirectUri("an http redirect_uri needs a host")
        if is_loopback_host(parts.hostname) or policy.allow_http:
            return
        raise InvalidRedirectUri(
            "plain http redirect URIs are allowed only on loopback (localhost, 127.0.0.1, [::1])"
        )
    # RFC 8252 §7.1: private-use URI scheme for native apps (cursor://, vscode://, ...).
    if not policy.allow_custom_schemes:
        raise InvalidRedirectUri("custom-scheme redirect URIs are not allowed by this server")


def _loopback_equal(requested: SplitResult, registered: SplitResult) -> bool:
    return (
        requested.scheme == registered.scheme == "http"
        and requested.hostname is not None
        and requested.hostname == registered.hostname
        and is_loopback_host(registered.hostname)
        and requested.path == registered.path
        and requested.query == registered.query
        and not requested.fragment
        and requested.username is None
        and requested.password is None
        and "@" not in requested.netloc
    )


def matches(requested: str, registered: str) -> bool:
    if requested == registered:
        return "#" not in requested
    try:
        req = urlsplit(requested)
        reg = urlsplit(registered)
        req.port  # noqa: B018
        reg.port  # noqa: B018
    except ValueError:
        return False
    # RFC 8252 §7.3: loopback redirect URIs match with any port.
    return _loopback_equal(req, reg)


def match_any(requested: str, registered: list[str]) -> bool:
    return any(matches(requested, candidate) for candidate in registered)


def is_custom_scheme(uri: str) -> bool:
    scheme = urlsplit(uri).scheme.lower()
    return scheme not in ("http", "https")

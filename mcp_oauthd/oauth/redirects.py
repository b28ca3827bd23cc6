"""Redirect URI rules, in one place (RFC 6749 §3.1.2, RFC 8252 §7, RFC 9700 §4.1).

Registration (``validate``):

- A registered URI is absolute, without a fragment (RFC 6749 §3.1.2), user information,
  whitespace, backslashes or dot segments, and with a plain host name or IP literal.
- https anywhere; plain http only on a loopback host (RFC 8252 §7.3) unless the
  development switch ``allow_http`` is on; a private-use scheme such as ``cursor://`` or
  ``vscode://`` (RFC 8252 §7.1) when the policy allows custom schemes.
- Schemes that execute, read local content or hand the browser to another handler
  (``javascript``, ``data``, ``file``, ``vbscript``, ``blob``, ``intent``, ...) are refused
  always, whatever the policy.
- ``application_type`` (OpenID Connect Dynamic Registration §2): a ``web`` client uses
  https only (no loopback, no custom scheme); a ``native`` client uses loopback http, a
  private-use scheme or a claimed https URL (RFC 8252 §7.1-7.3).

Matching (``matches``): exact string comparison (RFC 9700 §4.1.3), with one exception: a
loopback URI (``http://localhost``, ``http://127.0.0.1``, ``http://[::1]``) matches a
registered one that differs *only* in the port (RFC 8252 §7.3: the native app picks the
port at request time). Everything else about it (scheme, host spelling, path, query)
must be byte-identical, so case games, percent-encoding games, added queries, path
traversal and user information never match.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import SplitResult, urlsplit

from mcp_oauthd.config.models import is_loopback_host
from mcp_oauthd.oauth.errors import InvalidRedirectUri

ApplicationType = Literal["web", "native"]

#: Schemes refused whatever the policy: they run script, read local or browser-internal
#: content, or launch arbitrary handlers/apps in a way the user cannot judge.
DANGEROUS_SCHEMES = frozenset(
    {
        "javascript",
        "jscript",
        "livescript",
        "vbscript",
        "data",
        "file",
        "blob",
        "about",
        "filesystem",
        "view-source",
        "chrome",
        "chrome-extension",
        "moz-extension",
        "safari-extension",
        "ms-browser-extension",
        "resource",
        "res",
        "content",
        "intent",
        "ms-settings",
        "ms-appx",
        "ms-appx-web",
        "jar",
        "wyciwyg",
        "ftp",
        "ws",
        "wss",
        "mailto",
        "tel",
        "sms",
    }
)
MAX_LENGTH = 2000
_SCHEME = re.compile(r"^[a-z][a-z0-9+.\-]*$")
# A host we accept in a registered http(s) URI: DNS labels (IDNs in punycode) or an IP.
_LABEL = r"[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?"
_HOST = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*\.?$")
LOOPBACK_LITERALS = frozenset({"localhost", "127.0.0.1", "[::1]"})
# The only URIs whose port is ignored: the three loopback spellings, plain http, and a
# decimal port. Group 1: host as written; group 2: everything after the authority.
_LOOPBACK = re.compile(
    r"^http://(localhost|127\.0\.0\.1|\[::1\])(?::([1-9][0-9]{0,4}))?([/?].*)?$", re.DOTALL
)


@dataclass(frozen=True)
class RedirectPolicy:
    allow_custom_schemes: bool = True
    allow_http: bool = False


def _has_unsafe_characters(uri: str) -> bool:
    # urlsplit silently drops tabs and newlines (WHATWG URL rules), so a URI containing
    # them would compare differently from what the browser is sent: refuse them outright.
    return any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in uri) or "\\" in uri


def _split(uri: object) -> SplitResult:
    if not isinstance(uri, str) or not uri or len(uri) > MAX_LENGTH:
        raise InvalidRedirectUri(
            f"redirect_uri must be a non-empty string under {MAX_LENGTH} characters"
        )
    if _has_unsafe_characters(uri):
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


def is_custom_scheme(uri: str) -> bool:
    scheme = urlsplit(uri).scheme.lower()
    return scheme not in ("http", "https")


def _check_host(parts: SplitResult, scheme: str) -> None:
    host = parts.hostname
    if not host:
        raise InvalidRedirectUri(f"an {scheme} redirect_uri needs a host")
    if parts.netloc.startswith("["):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise InvalidRedirectUri("redirect_uri has an invalid IPv6 address") from None
        return
    # Percent-encoded or otherwise unusual host names are decoded differently by
    # different parsers (RFC 9700 §4.1.3): only plain names and IPv4 literals.
    if not _HOST.match(host):
        raise InvalidRedirectUri("redirect_uri has an invalid host name")


def _check_path(parts: SplitResult) -> None:
    segments = parts.path.split("/")
    lowered = [s.lower() for s in segments]
    if any(s in (".", "..", "%2e", "%2e%2e", ".%2e", "%2e.") for s in lowered):
        raise InvalidRedirectUri("redirect_uri must not contain dot segments")


def validate(
    uri: str, policy: RedirectPolicy, application_type: ApplicationType | None = None
) -> None:
    """Check a redirect URI at registration / config time; raise ``InvalidRedirectUri``."""
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
    if scheme in ("http", "https"):
        _check_host(parts, scheme)
        _check_path(parts)
        loopback = is_loopback_host(parts.hostname)
        if application_type == "web" and loopback:
            raise InvalidRedirectUri(
                "a web application cannot use a loopback redirect_uri; "
                "register it with application_type native"
            )
        if scheme == "https":
            return
        if loopback:
            return  # RFC 8252 §7.3
        if policy.allow_http:
            return
        raise InvalidRedirectUri(
            "plain http redirect URIs are allowed only on loopback (localhost, 127.0.0.1, [::1])"
        )
    # RFC 8252 §7.1: private-use URI scheme for native apps (cursor://, vscode://, ...).
    if not policy.allow_custom_schemes:
        raise InvalidRedirectUri("custom-scheme redirect URIs are not allowed by this server")
    if application_type == "web":
        raise InvalidRedirectUri(
            "a web application cannot use a custom-scheme redirect_uri; "
            "register it with application_type native"
        )
    if not uri[len(scheme) + 1 :].strip("/"):
        raise InvalidRedirectUri("a custom-scheme redirect_uri needs a path")
    _check_path(parts)


def is_native_uri(uri: str) -> bool:
    """A URI only a native app can use: loopback http or a private-use scheme."""
    return is_loopback_uri(uri) or is_custom_scheme(uri)


def _loopback_parts(uri: str) -> tuple[str, str] | None:
    """(host as written, rest) of a port-agnostic loopback URI, else None."""
    match = _LOOPBACK.match(uri)
    if match is None:
        return None
    port = match.group(2)
    if port is not None and int(port) > 65535:
        return None
    return match.group(1), match.group(3) or ""


def matches(requested: str, registered: str) -> bool:
    """Does the requested redirect URI match a registered one (RFC 9700 §4.1.3)?"""
    if not isinstance(requested, str) or _has_unsafe_characters(requested) or "#" in requested:
        return False
    if len(requested) > MAX_LENGTH:
        return False
    if requested == registered:
        return True
    # RFC 8252 §7.3: loopback redirect URIs match with any port, nothing else differing.
    req = _loopback_parts(requested)
    reg = _loopback_parts(registered)
    return req is not None and reg is not None and req == reg


def match_any(requested: str, registered: list[str]) -> bool:
    return any(matches(requested, candidate) for candidate in registered)


def port_agnostic(uri: str) -> str:
    """The URI with a loopback port removed: equal results match each other."""
    parts = _loopback_parts(uri)
    if parts is None:
        return uri
    return f"http://{parts[0]}{parts[1]}"

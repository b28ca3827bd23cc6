"""What resource servers ask: RFC 7662 introspection and the nginx ``/auth/verify`` check.

This is the hot path: every MCP request behind mcp-oauthd ends up here. A presented
token costs at most one storage lookup (by its SHA-256) and never an upstream call:
revoking a grant deletes its access tokens atomically (``Storage.revoke_grant``), so the
token record alone says whether the token is alive. A value that cannot be one of our
access tokens (a refresh token, a code, an upstream IdP token, garbage) is answered
without touching storage at all.

Decisions:
- Only resource servers introspect, with their ``introspection_client_id``/``_secret``
  (RFC 7662 §2.1 requires caller authentication; an unauthenticated caller gets 401 and
  learns nothing about the token, §4 "token scanning").
- A resource server sees ``active: true`` only for access tokens whose audience is its
  own resource (RFC 7662 §4: the server may answer inactive for tokens the caller is not
  meant to see; RFC 8707: a token is for one resource).
- Refresh tokens never introspect as active. RFC 7662 would let a *client* introspect its
  own refresh token, but our callers are resource servers, which never hold refresh
  tokens; a refresh token in a resource server's hands is a leak, and "inactive" is the
  safe answer (DESIGN §1: a refresh token is never accepted as an access token).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import structlog

from mcp_oauthd.config.models import Config, ResourceConfig
from mcp_oauthd.oauth import client_auth
from mcp_oauthd.oauth import metadata as md
from mcp_oauthd.oauth.client_auth import ClientCredentials
from mcp_oauthd.oauth.errors import (
    InsufficientScope,
    InvalidClient,
    InvalidRequest,
    InvalidToken,
    OAuthError,
)
from mcp_oauthd.oauth.tokens import ACCESS_PREFIX, token_hash
from mcp_oauthd.observability.tracing import traced
from mcp_oauthd.security.crypto import constant_time_equals
from mcp_oauthd.service.context import Services
from mcp_oauthd.service.jwt import is_jwt_shaped
from mcp_oauthd.storage.base import AccessTokenRecord, Storage

log = structlog.get_logger("mcp_oauthd.introspect")

#: RFC 7662 §2.1 / RFC 6749 §5.2: the challenge of a 401 to an introspection caller.
BASIC_CHALLENGE = 'Basic realm="mcp-oauthd", charset="UTF-8"'
#: Longest value worth a lookup: opaque tokens are ~49 characters, our JWTs under 1 KiB.
MAX_TOKEN_LENGTH = 4096
_BEARER = re.compile(r"^[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9\-._~+/]+=*) *$")


def _same_resource(a: str, b: str) -> bool:
    return a == b or a.rstrip("/") == b.rstrip("/")


def _claimed_id(authorization: str | None, form: Mapping[str, str]) -> str | None:
    """The client id a refused caller claimed, for the audit event (None if unreadable)."""
    try:
        return client_auth.parse(authorization, form).client_id
    except OAuthError:
        return None


#: Authorization headers remembered as authenticated (see ``ResourceServers.basic``).
MAX_REMEMBERED = 64


class ResourceServers:
    """Authenticates MCP servers by their introspection credentials (from the config)."""

    def __init__(self, config: Config) -> None:
        self._by_id: dict[str, tuple[ResourceConfig, str]] = {}
        for resource in config.resources:
            if resource.introspection_client_id and resource.introspection_client_secret:
                secret = resource.introspection_client_secret.get_secret_value()
                self._by_id[resource.introspection_client_id] = (resource, secret)
        # Basic header -> (client id, resource), for headers that authenticated: every
        # introspection repeats the same header, and decoding plus the constant-time
        # comparison were a measurable share of the hottest request. Only successes are
        # kept (an attacker cannot fill it), it is bounded, and it lives as long as this
        # object, i.e. until the config is reloaded.
        self._remembered: dict[str, tuple[str, ResourceConfig]] = {}

    @property
    def enabled(self) -> bool:
        return bool(self._by_id)

    def authenticate_request(
        self, authorization: str | None, form: Mapping[str, str]
    ) -> tuple[ClientCredentials | None, ResourceConfig]:
        """The resource server making this request; raises ``InvalidClient``. Returns the
        parsed credentials too when they had to be parsed (None for a remembered header)."""
        if authorization is not None:
            known = self._remembered.get(authorization)
            # RFC 6749 §2.3: one authentication method only; a client_id beside Basic
            # must name the same client (client_auth.parse enforces both when parsing).
            if (
                known is not None
                and "client_secret" not in form
                and form.get("client_id", known[0]) == known[0]
            ):
                return None, known[1]
        creds = self.parse(authorization, form)
        resource = self.authenticate(creds)
        if (
            authorization is not None
            and creds.method == "client_secret_basic"
            and len(self._remembered) < MAX_REMEMBERED
        ):
            self._remembered[authorization] = (creds.client_id, resource)
        return creds, resource

    def parse(self, authorization: str | None, form: Mapping[str, str]) -> ClientCredentials:
        try:
            return client_auth.parse(authorization, form)
        except InvalidClient as exc:
            raise InvalidClient(exc.description, www_authenticate=BASIC_CHALLENGE) from None

    def authenticate(self, creds: ClientCredentials) -> ResourceConfig:
        entry = self._by_id.get(creds.client_id)
        presented = creds.secret or ""
        # Compare even for an unknown id, so timing does not tell which ids exist.
        expected = entry[1] if entry else "\x00" * 32
        ok = constant_time_equals(presented, expected)
        if entry is None or creds.secret is None or not ok:
            raise InvalidClient(
                "resource server authentication failed", www_authenticate=BASIC_CHALLENGE
            )
        return entry[0]


async def find_access_token(
    services: Services,
    token: str,
    resource: ResourceConfig,
    now: float,
    lookup_now: Callable[[str], AccessTokenRecord | None] | None = None,
) -> AccessTokenRecord | None:
    """The live access token ``token`` if its audience is ``resource``; at most one
    storage lookup, none for values that cannot be our access tokens. ``lookup_now``: the
    storage's synchronous lookup where it has one (:func:`access_lookup_now`)."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    if not (token.startswith(ACCESS_PREFIX) or is_jwt_shaped(token)):
        return None  # refresh tokens, codes, upstream tokens, garbage
    if lookup_now is not None:
        record = lookup_now(token_hash(token))
    else:
        record = await services.storage.get_access_token(token_hash(token))
    if record is None or record.expires_at <= now:
        return None
    if not _same_resource(record.resource, resource.uri):
        return None
    return record


def access_lookup_now(storage: Storage) -> Callable[[str], AccessTokenRecord | None] | None:
    """The storage's synchronous access-token lookup (``ReadsAccessTokensNow``), or None
    when it has none (Redis: the lookup is a network round trip)."""
    lookup: Callable[[str], AccessTokenRecord | None] | None
    try:
        lookup = storage.get_access_token_now  # type: ignore[attr-defined]
    except AttributeError:
        return None
    return lookup


@dataclass(frozen=True)
class Verified:
    record: AccessTokenRecord

    def headers(self) -> dict[str, str]:
        """Identity headers for nginx to pass to the MCP server (values that cannot be
        sent safely in a header are left out rather than mangled)."""
        candidates = {
            "X-Auth-Subject": self.record.subject,
            "X-Auth-Email": self.record.email,
            "X-Auth-Username": self.record.username,
            "X-Auth-Scopes": " ".join(self.record.scopes),
            "X-Auth-Client-Id": self.record.client_id,
        }
        # Printable ASCII only (\x20-\x7e): no control character can reach nginx.
        return {
            name: value
            for name, value in candidates.items()
            if value is not None and value.isascii() and value.isprintable()
        }


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def bearer_challenge(
    resource: ResourceConfig,
    scopes: list[str],
    error: str | None = None,
    description: str | None = None,
) -> str:
    """RFC 6750 §3 + RFC 9728 §5.1: where the metadata is, what scope to ask for, what
    went wrong (no error code when no token was presented, RFC 6750 §3.1)."""
    parts = [f"resource_metadata={_quote(md.resource_metadata_url(resource.uri))}"]
    if scopes:
        parts.append(f"scope={_quote(' '.join(scopes))}")
    if error:
        parts.append(f"error={_quote(error)}")
    if description:
        parts.append(f"error_description={_quote(description)}")
    return "Bearer " + ", ".join(parts)


def required_scopes(
    resource: ResourceConfig, requested: str | None, original_uri: str | None
) -> list[str]:
    """The location's scopes (from nginx) plus the config's ``path_scopes`` for the
    longest prefix of the original request path."""
    needed = [s for s in (requested or "").split(" ") if s]
    if original_uri and resource.path_scopes:
        path = urlsplit(original_uri).path or "/"
        best: str | None = None
        for prefix in resource.path_scopes:
            base = prefix.rstrip("/")
            if (path == base or path.startswith(base + "/") or prefix == "/") and (
                best is None or len(prefix) > len(best)
            ):
                best = prefix
        if best is not None:
            needed.extend(resource.path_scopes[best])
    unique = list(dict.fromkeys(needed))
    unknown = sorted(set(unique) - set(resource.scopes))
    if unknown:
        # An nginx or config mistake: every request would be refused; say so loudly.
        raise _misconfigured("the required scope is not among the resource's scopes")
    return unique


def _misconfigured(description: str) -> InvalidRequest:
    """``/auth/verify`` was asked about no, or an unknown, resource or scope: a deployment
    mistake. A 400, not a 500: anyone can send it, and a 5xx would let them page the
    operator. It stays loud: nginx turns any answer but 2xx/401/403 from ``auth_request``
    into a 500 for the client, and the warning tells the operator what is wrong."""
    log.warning("auth/verify misconfigured", problem=description)
    return InvalidRequest(description)


class IntrospectionService:
    def __init__(self, services: Services) -> None:
        self.s = services
        self._servers = (services.config, ResourceServers(services.config))
        # Resolved once: the storage object lives as long as the services.
        self._lookup_now = access_lookup_now(services.storage)

    @property
    def resource_servers(self) -> ResourceServers:
        """The introspection credentials of the current config (it may be reloaded)."""
        if self._servers[0] is not self.s.config:
            self._servers = (self.s.config, ResourceServers(self.s.config))
        return self._servers[1]

    def _resource(self, uri: str | None) -> ResourceConfig:
        resources = self.s.config.resources
        if not uri:
            if len(resources) == 1:
                return resources[0]
            # With several MCP servers a forgotten X-Auth-Resource must not silently check
            # tokens against the default one (a token for it would pass everywhere).
            raise _misconfigured("X-Auth-Resource is required: several resources are configured")
        for resource in resources:
            if _same_resource(resource.uri, uri):
                return resource
        raise _misconfigured("X-Auth-Resource names no configured resource")

    # ------------------------------------------------------------------ RFC 7662
    @traced("introspect")
    async def introspect(
        self, form: Mapping[str, str], authorization: str | None
    ) -> dict[str, Any]:
        servers = self.resource_servers
        try:
            _, resource = servers.authenticate_request(authorization, form)
        except InvalidClient:
            self.s.auditor.emit("introspection.refused", client_id=_claimed_id(authorization, form))
            raise
        token = form.get("token")
        if token is None:
            raise InvalidRequest("token is required")
        # RFC 7662 §2.1: token_type_hint is optional and may be ignored; we route by shape.
        now = self.s.now()
        record = await find_access_token(self.s, token, resource, now, self._lookup_now)
        if record is None:
            # RFC 7662 §2.2: nothing but "active" for a token that is not active.
            return {"active": False}
        body: dict[str, Any] = {
            "active": True,
            "scope": " ".join(record.scopes),
            "client_id": record.client_id,
            "token_type": "Bearer",
            "exp": int(record.expires_at),
            "iat": int(record.issued_at),
            "nbf": int(record.issued_at),
            "sub": record.subject,
            "aud": record.resource,
            "iss": self.s.config.issuer,
            "jti": record.jti,
        }
        if record.username is not None:
            body["username"] = record.username
        if record.email is not None:
            body["email"] = record.email
        return body

    # ------------------------------------------------------------------ nginx auth_request
    @traced("auth.verify")
    async def verify(
        self,
        *,
        authorization: str | None,
        resource_uri: str | None,
        scope: str | None,
        original_uri: str | None,
    ) -> Verified:
        """Check the bearer of a request nginx is about to pass to an MCP server.

        Raises ``InvalidToken`` (401) or ``InsufficientScope`` (403), each carrying the
        ``WWW-Authenticate`` challenge nginx hands back to the client.
        """
        resource = self._resource(resource_uri)
        needed = required_scopes(resource, scope, original_uri)
        # With nothing specific required, point clients at what a default grant holds.
        advertised = needed or resource.effective_default_scopes
        match = _BEARER.match(authorization or "")
        if match is None:
            error: OAuthError = InvalidToken(
                "a bearer token is required",
                www_authenticate=bearer_challenge(resource, advertised),
            )
            raise error
        record = await find_access_token(
            self.s, match.group(1), resource, self.s.now(), self._lookup_now
        )
        if record is None:
            raise InvalidToken(
                "the access token is invalid, expired, revoked or for another resource",
                www_authenticate=bearer_challenge(
                    resource,
                    advertised,
                    "invalid_token",
                    "the access token is invalid, expired or for another resource",
                ),
            )
        missing = [s for s in needed if s not in record.scopes]
        if missing:
            # RFC 6750 §3.1: insufficient_scope is a 403 naming the scope needed.
            wanted = list(dict.fromkeys([*record.scopes, *needed]))
            raise InsufficientScope(
                "the access token lacks a required scope",
                www_authenticate=bearer_challenge(
                    resource, wanted, "insufficient_scope", "a required scope is missing"
                ),
            )
        return Verified(record)

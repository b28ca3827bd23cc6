"""Dynamic client registration (RFC 7591) and client management (RFC 7592).

Policy (``registration.policy``): ``open``, ``token`` (RFC 7591 §3: an initial access
token as a Bearer token, compared in constant time) or ``closed``.

Abuse controls, cheapest first, all keyed by the client's IP (an IPv6 address by its
/64, the unit one host controls):

1. **Identical public registrations are merged.** A public client registering again with
   the same metadata from the same address (loopback redirect ports ignored, since they
   match any port anyway) gets the existing ``client_id`` back and stores nothing. This is
   what lets many users of one MCP client behind one egress IP (an office NAT, a hosted
   client) register without exhausting the caps. The repeat answer carries no
   registration access token: only the first registrant can manage the client.
2. **A registration window**: at most ``max_per_window`` new clients per address per
   ``window`` (a sliding window). The count lives in storage apart from the clients, so
   deleting clients does not give registrations back.
3. **A cap on active clients** per address (``max_clients_per_ip``), counted in storage.
4. **Expiry**: a client never used is deleted after ``unused_client_ttl``
   (``ClientRegistry.touch`` extends it on use).

Refusals past the limits are ``429`` with ``Retry-After`` and write nothing. Every
refusal and every registration is an audit event. Generated secrets (``mcpcs_``) and
registration access tokens (``mcprg_``) are 256-bit random and stored only as hashes.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
from typing import Any, Protocol
from urllib.parse import quote

from mcp_oauthd.oauth.errors import (
    AccessDenied,
    InvalidClientMetadata,
    InvalidRedirectUri,
    InvalidToken,
    RateLimited,
)
from mcp_oauthd.oauth.metadata import REGISTER_PATH, endpoint
from mcp_oauthd.oauth.redirects import RedirectPolicy
from mcp_oauthd.oauth.registration import (
    COSMETIC_STRINGS,
    COSMETIC_URIS,
    ClientMetadata,
    parse_client_metadata,
)
from mcp_oauthd.oauth.tokens import CLIENT_SECRET_PREFIX, REGISTRATION_TOKEN_PREFIX
from mcp_oauthd.observability.tracing import traced
from mcp_oauthd.security.crypto import constant_time_equals, random_token, sha256_hex
from mcp_oauthd.service.clients import MAX_CLIENT_ID_LENGTH, hash_secret
from mcp_oauthd.service.context import Services
from mcp_oauthd.storage.base import ClientKind, ClientRecord, Storage

WINDOW_KIND = "regwindow"
DEDUPE_KIND = "regdedupe"
MAX_BODY_BYTES = 16 * 1024
_INVALID_TOKEN_CHALLENGE = 'Bearer error="invalid_token"'
# Compared against when there is no stored hash, so a missing client takes the same path.
_DUMMY_HASH = sha256_hex("no registration access token")
_COSMETIC = frozenset((*COSMETIC_URIS, *COSMETIC_STRINGS, "contacts"))


def rate_key(ip: str) -> str:
    """The unit the per-address limits count by: an IPv4 address, or an IPv6 /64."""
    try:
        address = ipaddress.ip_address(ip.strip("[]"))
    except ValueError:
        return ip[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))
    return str(address)


class RegistrationWindow(Protocol):
    """The time-windowed registration counter. Swappable (e.g. for Redis) as long as
    ``acquire`` is atomic per key."""

    async def acquire(self, key: str, now: float) -> float | None:
        """Count one registration for ``key`` if the window has room and return None;
        otherwise count nothing and return the seconds until there is room."""


class StorageRegistrationWindow:
    """A sliding-window log per key in ephemeral storage: at most ``limit`` timestamps,
    expiring one window after the newest, so memory per key is bounded and idle keys
    disappear. Storage-backed, so it survives restarts and is shared by every process on
    the same storage; within one process a lock makes read-check-write atomic (across
    processes two racing registrations may both get the last slot)."""

    def __init__(self, storage: Storage, *, limit: int, window: float) -> None:
        self._storage = storage
        self._limit = limit
        self._window = window
        self._lock = asyncio.Lock()

    async def acquire(self, key: str, now: float) -> float | None:
        if self._limit <= 0:
            return None
        async with self._lock:
            data = await self._storage.get_ephemeral(WINDOW_KIND, key, now)
            stamps = [float(t) for t in (data or {}).get("t", []) if float(t) > now - self._window]
            if len(stamps) >= self._limit:
                return max(1.0, stamps[len(stamps) - self._limit] + self._window - now)
            stamps.append(now)
            await self._storage.put_ephemeral(
                WINDOW_KIND, key, {"t": stamps[-self._limit :]}, now + self._window
            )
            return None


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer`` header (RFC 6750 §2.1), else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


class RegistrationService:
    def __init__(self, services: Services, window: RegistrationWindow | None = None) -> None:
        self.s = services
        cfg = services.config.registration
        self.config = cfg
        self.window: RegistrationWindow = window or StorageRegistrationWindow(
            services.storage, limit=cfg.max_per_window, window=cfg.window
        )
        redirect = services.config.security.redirect
        self._policy = RedirectPolicy(
            allow_custom_schemes=redirect.allow_custom_schemes, allow_http=redirect.allow_http
        )
        self._known_scopes = frozenset(s for r in services.config.resources for s in r.scopes)
        # Serialises the check-then-create of new clients in this process (cap + window).
        self._create_lock = asyncio.Lock()

    @property
    def enabled(self) -> bool:
        return self.config.policy != "closed"

    def client_uri(self, client_id: str) -> str:
        return endpoint(self.s.config.issuer, REGISTER_PATH) + "/" + quote(client_id, safe="")

    def _refused(self, ip: str, error: str, reason: str, description: str | None) -> None:
        # ``reason`` is a short token (a metrics label); ``description`` says what was wrong.
        self.s.auditor.emit(
            "registration.refused", ip=ip, error=error, reason=reason, description=description
        )

    # ------------------------------------------------------------------ RFC 7591
    def admit(self, bearer: str | None, ip: str) -> None:
        """The policy check, before the body is even read."""
        if self.config.policy == "closed":
            self._refused(ip, "access_denied", "closed", "registration is closed")
            raise AccessDenied(
                "dynamic client registration is disabled on this server; ask its "
                "administrator to register your client"
            )
        if self.config.policy == "token":
            expected = self.config.initial_access_token
            assert expected is not None  # enforced by the config model
            # Hashed first so the comparison does not even reveal the token's length.
            presented = sha256_hex(bearer) if bearer is not None else ""
            if not constant_time_equals(presented, sha256_hex(expected.get_secret_value())):
                self._refused(
                    ip, "invalid_token", "initial_access_token", "missing or wrong initial token"
                )
                # RFC 7591 §3: a bad initial access token is answered as RFC 6750 says.
                raise InvalidToken(
                    "a valid initial access token is required to register a client",
                    www_authenticate=_INVALID_TOKEN_CHALLENGE,
                )

    def parse(self, body: bytes, content_type: str, ip: str) -> ClientMetadata:
        try:
            if content_type != "application/json" and not content_type.endswith("+json"):
                raise InvalidClientMetadata(
                    "the registration request must be a JSON object (application/json)"
                )
            if len(body) > MAX_BODY_BYTES:
                raise InvalidClientMetadata("the registration request is too large")
            try:
                raw = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                raise InvalidClientMetadata("the registration request is not valid JSON") from None
            meta = parse_client_metadata(raw, policy=self._policy, known_scopes=self._known_scopes)
            if meta.is_public and not self.config.allow_public_clients:
                raise InvalidClientMetadata(
                    "this server does not register public clients; use "
                    "token_endpoint_auth_method client_secret_basic or client_secret_post"
                )
        except (InvalidClientMetadata, InvalidRedirectUri) as exc:
            self._refused(ip, exc.error, exc.error, exc.description)
            raise
        return meta

    @traced("registration.register")
    async def register(self, meta: ClientMetadata, ip: str) -> dict[str, Any]:
        """Create a client (or return the identical public one); the RFC 7591 §3.2.1
        response body."""
        key = rate_key(ip)
        now = self.s.now()
        fingerprint = meta.fingerprint(key) if meta.is_public else None
        if fingerprint is not None:
            existing = await self._existing(fingerprint, key, now)
            if existing is not None:
                self.s.auditor.emit(
                    "registration",
                    client_id=existing.client_id,
                    client_name=existing.client_name,
                    public=True,
                    deduplicated=True,
                    ip=ip,
                )
                return self._response(existing.client_id, existing.created_at, meta)
        async with self._create_lock:
            await self._check_limits(key, ip, now)
            client_id = random_token(16)
            secret = None if meta.is_public else CLIENT_SECRET_PREFIX + random_token(32)
            management = REGISTRATION_TOKEN_PREFIX + random_token(32)
            record = ClientRecord(
                client_id=client_id,
                client_name=meta.client_name,
                kind=ClientKind.DYNAMIC,
                secret_hash=hash_secret(secret) if secret is not None else None,
                redirect_uris=meta.redirect_uris,
                grant_types=meta.grant_types,
                response_types=meta.response_types,
                token_endpoint_auth_method=meta.token_endpoint_auth_method,
                scope=meta.scope,
                application_type=meta.application_type,
                registration_access_token_hash=sha256_hex(management),
                created_at=now,
                expires_at=now + self.config.unused_client_ttl,
                registered_ip=key,
                metadata=dict(meta.extra),
            )
            await self.s.storage.put_client(record)
        if fingerprint is not None:
            await self.s.storage.put_ephemeral(
                DEDUPE_KIND, fingerprint, {"client_id": client_id}, record.expires_at or now
            )
        self.s.auditor.emit(
            "registration",
            client_id=client_id,
            client_name=meta.client_name,
            public=meta.is_public,
            auth_method=meta.token_endpoint_auth_method,
            application_type=meta.application_type,
            ip=ip,
        )
        return self._response(client_id, now, meta, secret=secret, management=management)

    async def _existing(self, fingerprint: str, key: str, now: float) -> ClientRecord | None:
        found = await self.s.storage.get_ephemeral(DEDUPE_KIND, fingerprint, now)
        if found is None:
            return None
        client = await self.s.storage.get_client(str(found.get("client_id")))
        if (
            client is None
            or client.kind is not ClientKind.DYNAMIC
            or not client.is_public
            or client.registered_ip != key
            or (client.expires_at is not None and client.expires_at <= now)
        ):
            return None
        return client

    async def _check_limits(self, key: str, ip: str, now: float) -> None:
        cap = self.config.max_clients_per_ip
        if cap and await self.s.storage.count_clients_by_ip(key, now) >= cap:
            self.s.auditor.emit("rate_limited", endpoint="registration", reason="ip_cap", ip=ip)
            raise RateLimited(
                retry_after=math.ceil(self.config.window),
                description="too many active clients are registered from this address; "
                "delete unused ones or try again later",
            )
        wait = await self.window.acquire(key, now)
        if wait is not None:
            self.s.auditor.emit("rate_limited", endpoint="registration", reason="window", ip=ip)
            raise RateLimited(
                retry_after=max(1, math.ceil(wait)),
                description="too many registrations from this address; try again later",
            )

    def _response(
        self,
        client_id: str,
        issued_at: float,
        meta: ClientMetadata,
        *,
        secret: str | None = None,
        management: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"client_id": client_id, "client_id_issued_at": int(issued_at)}
        if secret is not None:
            body["client_secret"] = secret
            body["client_secret_expires_at"] = 0  # RFC 7591 §3.2.1: 0 = never expires
        if management is not None:
            body["registration_access_token"] = management
            body["registration_client_uri"] = self.client_uri(client_id)
        body.update(meta.to_response())
        return body

    # ------------------------------------------------------------------ RFC 7592
    async def _managed(self, client_id: str, bearer: str | None, ip: str) -> ClientRecord:
        """The client a registration access token manages, or 401 (RFC 7592 §2.1: also
        for an unknown client, so the endpoint is no oracle for client ids)."""
        client = None
        if 0 < len(client_id) <= MAX_CLIENT_ID_LENGTH:
            client = await self.s.storage.get_client(client_id)
        stored = client.registration_access_token_hash if client is not None else None
        presented = sha256_hex(bearer) if bearer is not None else ""
        good = constant_time_equals(presented, stored or _DUMMY_HASH)
        now = self.s.now()
        if (
            client is None
            or stored is None
            or not good
            or client.kind is not ClientKind.DYNAMIC
            or (client.expires_at is not None and client.expires_at <= now)
        ):
            self.s.auditor.emit("registration.management.refused", client_id=client_id[:100], ip=ip)
            raise InvalidToken(
                "the registration access token is not valid for this client",
                www_authenticate=_INVALID_TOKEN_CHALLENGE,
            )
        return client

    @traced("registration.read")
    async def read(self, client_id: str, bearer: str | None, ip: str) -> dict[str, Any]:
        """RFC 7592 §2.1: the client's current registration (secrets are never shown
        again: only their hashes are kept)."""
        client = await self._managed(client_id, bearer, ip)
        body: dict[str, Any] = {
            "client_id": client.client_id,
            "client_id_issued_at": int(client.created_at),
            "registration_client_uri": self.client_uri(client.client_id),
            "redirect_uris": list(client.redirect_uris),
            "token_endpoint_auth_method": client.token_endpoint_auth_method,
            "grant_types": list(client.grant_types),
            "response_types": list(client.response_types),
            "application_type": client.application_type,
        }
        if client.secret_hash is not None:
            body["client_secret_expires_at"] = 0
        if client.client_name is not None:
            body["client_name"] = client.client_name
        if client.scope is not None:
            body["scope"] = client.scope
        body.update({k: v for k, v in client.metadata.items() if k in _COSMETIC})
        return body

    @traced("registration.delete")
    async def delete(self, client_id: str, bearer: str | None, ip: str) -> None:
        """RFC 7592 §2.3: delete the client; its grants and tokens die with it."""
        client = await self._managed(client_id, bearer, ip)
        await self.s.storage.delete_client(client.client_id)
        self.s.auditor.emit("registration.deleted", client_id=client.client_id, ip=ip)

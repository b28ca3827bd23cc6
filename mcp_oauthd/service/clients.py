"""One interface over the client kinds: static (config), dynamic (storage, RFC 7591) and
Client ID Metadata Documents (an ``https://`` client id, fetched by ``service.cimd``).

Dynamic clients expire: a registration never used is gone after
``registration.unused_client_ttl``; each use (a successful client authentication at the
token or revocation endpoint) pushes the expiry to ``registration.idle_client_ttl`` from
then. Storage ``gc`` deletes expired clients and revokes their grants; until it runs,
``get`` already treats them as unknown.
"""

from __future__ import annotations

import asyncio
import functools
from typing import TYPE_CHECKING

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from mcp_oauthd.clock import Clock, SystemClock
from mcp_oauthd.config.models import Config
from mcp_oauthd.oauth.client_auth import ClientCredentials
from mcp_oauthd.oauth.errors import InvalidClient
from mcp_oauthd.observability.tracing import traced
from mcp_oauthd.security.crypto import constant_time_equals, sha256_hex
from mcp_oauthd.storage.base import ClientKind, ClientRecord, Storage

if TYPE_CHECKING:
    from mcp_oauthd.service.cimd import CimdFetcher

_HASHER = PasswordHasher()
# Secrets at least this long are treated as high-entropy: SHA-256 is enough and keeps the
# token endpoint fast; shorter (human-chosen) secrets get argon2.
HIGH_ENTROPY_LENGTH = 32


def hash_secret(secret: str) -> str:
    if len(secret) >= HIGH_ENTROPY_LENGTH:
        return "sha256:" + sha256_hex(secret)
    return _HASHER.hash(secret)


async def verify_secret_async(secret_hash: str, presented: str) -> bool:
    """``verify_secret`` without stalling the event loop: argon2 (human-chosen secrets)
    takes ~100 ms of CPU and runs in a thread; SHA-256 (generated secrets) runs inline."""
    if secret_hash.startswith("sha256:"):
        return verify_secret(secret_hash, presented)
    return await asyncio.to_thread(verify_secret, secret_hash, presented)


def verify_secret(secret_hash: str, presented: str) -> bool:
    if secret_hash.startswith("sha256:"):
        return constant_time_equals(secret_hash[7:], sha256_hex(presented))
    try:
        return _HASHER.verify(secret_hash, presented)
    except (VerificationError, InvalidHashError):
        return False


@functools.lru_cache(maxsize=64)
def _static_secret_hash(secret: str) -> str:
    # argon2 is deliberately slow (~0.3 s); a process that builds its app more than once
    # (tests, reloads) hashes each configured secret once.
    return hash_secret(secret)


def static_clients(config: Config) -> dict[str, ClientRecord]:
    clients: dict[str, ClientRecord] = {}
    for c in config.clients:
        secret = c.client_secret.get_secret_value() if c.client_secret else None
        metadata: dict[str, object] = {}
        if c.scopes is not None:
            metadata["scopes"] = list(c.scopes)
        if c.resources is not None:
            metadata["resources"] = list(c.resources)
        clients[c.client_id] = ClientRecord(
            client_id=c.client_id,
            client_name=c.client_name or c.client_id,
            kind=ClientKind.STATIC,
            secret_hash=_static_secret_hash(secret) if secret else None,
            redirect_uris=list(c.redirect_uris),
            token_endpoint_auth_method="client_secret_basic" if secret else "none",
            scope=" ".join(c.scopes) if c.scopes is not None else None,
            metadata=metadata,
        )
    return clients


#: Client ids longer than this are never looked up (nor fetched).
MAX_CLIENT_ID_LENGTH = 512


class ClientRegistry:
    def __init__(
        self,
        config: Config,
        storage: Storage,
        *,
        clock: Clock | None = None,
        cimd: CimdFetcher | None = None,
    ) -> None:
        self._static = static_clients(config)
        self._storage = storage
        self._clock = clock or SystemClock()
        self._cimd = cimd
        self._idle_ttl = config.registration.idle_client_ttl

    @property
    def cimd(self) -> CimdFetcher | None:
        return self._cimd

    def with_config(self, config: Config) -> ClientRegistry:
        """A registry for a reloaded config: new static clients, same storage and fetcher."""
        return ClientRegistry(config, self._storage, clock=self._clock, cimd=self._cimd)

    async def get(self, client_id: str) -> ClientRecord | None:
        """The client, or None when unknown or expired.

        An ``https://`` client id is resolved through its metadata document when Client
        ID Metadata Documents are on; a document that cannot be used raises
        ``CimdError`` (an ``invalid_client`` OAuthError naming what is wrong), so the
        user and the client see why rather than "unknown client".
        """
        client = self._static.get(client_id)
        if client is not None:
            return client
        if len(client_id) > MAX_CLIENT_ID_LENGTH:
            return None
        if client_id.startswith("https://"):
            return None if self._cimd is None else await self._cimd.get(client_id)
        record = await self._storage.get_client(client_id)
        if record is None or record.kind is ClientKind.CIMD:
            return None
        if record.expires_at is not None and record.expires_at <= self._clock.now():
            return None
        return record

    async def touch(self, client: ClientRecord, now: float) -> None:
        """Record a use of a dynamic client: its expiry moves to ``idle_client_ttl`` from
        now. Writes at most about every tenth of that lifetime, not on every request."""
        if client.kind is not ClientKind.DYNAMIC:
            return
        idle = self._idle_ttl
        expires_at = None if idle is None else now + idle
        if "last_used_at" in client.metadata:  # not the first use: is a write due?
            if expires_at is None and client.expires_at is None:
                return
            if (
                idle is not None
                and expires_at is not None
                and client.expires_at is not None
                and expires_at - client.expires_at < max(60.0, idle * 0.1)
            ):
                return
        # Re-read right before writing so a concurrent RFC 7592 delete is not undone.
        current = await self._storage.get_client(client.client_id)
        if current is None:
            return
        await self._storage.put_client(
            current.model_copy(
                update={
                    "expires_at": expires_at,
                    "metadata": {**current.metadata, "last_used_at": now},
                }
            )
        )

    @traced("client.authenticate")
    async def authenticate(self, creds: ClientCredentials, now: float) -> ClientRecord:
        """RFC 6749 §2.3 / §3.2.1: confidential clients MUST authenticate."""
        client = await self.get(creds.client_id)
        basic = creds.method == "client_secret_basic"
        challenge = 'Basic realm="oauth"' if basic else None
        if client is None or (client.expires_at is not None and client.expires_at <= now):
            raise InvalidClient("client authentication failed", www_authenticate=challenge)
        if client.secret_hash is None:
            if creds.secret is not None:
                raise InvalidClient(
                    "this is a public client; it has no secret", www_authenticate=challenge
                )
            await self.touch(client, now)
            return client
        if creds.secret is None or not await verify_secret_async(client.secret_hash, creds.secret):
            raise InvalidClient("client authentication failed", www_authenticate=challenge)
        await self.touch(client, now)
        return client

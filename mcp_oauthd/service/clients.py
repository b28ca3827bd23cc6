"""One interface over the client kinds: static (config) and dynamic (storage)."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from mcp_oauthd.config.models import Config
from mcp_oauthd.oauth.client_auth import ClientCredentials
from mcp_oauthd.oauth.errors import InvalidClient
from mcp_oauthd.security.crypto import constant_time_equals, sha256_hex
from mcp_oauthd.storage.base import ClientKind, ClientRecord, Storage

_HASHER = PasswordHasher()
# Secrets at least this long are treated as high-entropy: SHA-256 is enough and keeps the
# token endpoint fast; shorter (human-chosen) secrets get argon2.
HIGH_ENTROPY_LENGTH = 32


def hash_secret(secret: str) -> str:
    if len(secret) >= HIGH_ENTROPY_LENGTH:
        return "sha256:" + sha256_hex(secret)
    return _HASHER.hash(secret)


def verify_secret(secret_hash: str, presented: str) -> bool:
    if secret_hash.startswith("sha256:"):
        return constant_time_equals(secret_hash[7:], sha256_hex(presented))
    try:
        return _HASHER.verify(secret_hash, presented)
    except (VerificationError, InvalidHashError):
        return False


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
            secret_hash=hash_secret(secret) if secret else None,
            redirect_uris=list(c.redirect_uris),
            token_endpoint_auth_method="client_secret_basic" if secret else "none",
            scope=" ".join(c.scopes) if c.scopes is not None else None,
            metadata=metadata,
        )
    return clients


class ClientRegistry:
    def __init__(self, config: Config, storage: Storage) -> None:
        self._static = static_clients(config)
        self._storage = storage

    async def get(self, client_id: str) -> ClientRecord | None:
        client = self._static.get(client_id)
        if client is not None:
            return client
        if len(client_id) > 512:
            return None
        return await self._storage.get_client(client_id)

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
            return client
        if creds.secret is None or not verify_secret(client.secret_hash, creds.secret):
            raise InvalidClient("client authentication failed", www_authenticate=challenge)
        return client

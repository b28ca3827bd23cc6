"""What the flows run on: one object built by the app and passed to every service."""

from __future__ import annotations

from dataclasses import dataclass, field

from mcp_oauthd.clock import Clock
from mcp_oauthd.config.models import Config
from mcp_oauthd.providers.base import Provider
from mcp_oauthd.security.audit import Auditor
from mcp_oauthd.security.crypto import KeyRing, Signer
from mcp_oauthd.service.clients import ClientRegistry
from mcp_oauthd.service.jwt import SigningKeyManager
from mcp_oauthd.service.upstream import KeyedLocks
from mcp_oauthd.storage.base import Storage


@dataclass
class Services:
    config: Config
    storage: Storage
    provider: Provider
    clients: ClientRegistry
    keyring: KeyRing
    signer: Signer
    clock: Clock
    auditor: Auditor
    # JWT access tokens (tokens.format: jwt): the shared signing keys.
    signing_keys: SigningKeyManager | None = None
    # Single-flight upstream refreshes, per grant (see service.upstream).
    upstream_locks: KeyedLocks = field(default_factory=KeyedLocks)

    def now(self) -> float:
        return self.clock.now()

    def reload(self, config: Config) -> None:
        """Swap in a reloaded config (see ``service.reload`` for what may change): every
        request after this sees the new clients, resources, policy and consent rules."""
        self.config = config
        self.clients = self.clients.with_config(config)

"""What the flows run on: one object built by the app and passed to every service."""

from __future__ import annotations

from dataclasses import dataclass

from mcp_oauthd.clock import Clock
from mcp_oauthd.config.models import Config
from mcp_oauthd.providers.base import Provider
from mcp_oauthd.security.audit import Auditor
from mcp_oauthd.security.crypto import KeyRing, Signer
from mcp_oauthd.service.clients import ClientRegistry
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

    def now(self) -> float:
        return self.clock.now()

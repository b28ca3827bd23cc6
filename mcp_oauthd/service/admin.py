"""Operator commands on the configured storage: clients, grants, keys, garbage collection.

The ``mcp-oauthd clients|grants|keys|gc`` commands open the storage the config names
(sqlite or redis) directly, next to a running daemon: every operation here is one of the
storage's atomic domain operations, so the daemon sees a revoked grant on its next storage
read (a refresh or an introspection answers ``invalid_grant`` / ``active: false``) without
a restart or a signal.

Views are plain JSON-ready dicts. They never hold a secret, a hash of one, an encrypted
upstream token or a private key: only whether one exists.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mcp_oauthd.clock import Clock, SystemClock
from mcp_oauthd.config.models import Config, MemoryStorageConfig, SqliteStorageConfig
from mcp_oauthd.observability.logging import is_credential_key
from mcp_oauthd.security.audit import Auditor
from mcp_oauthd.security.keys import KEYS_FILE, load_key_material, state_dir
from mcp_oauthd.service.clients import static_clients
from mcp_oauthd.storage import build_storage
from mcp_oauthd.storage.base import ClientRecord, GrantRecord, Storage

__all__ = ["Admin", "AdminError", "format_table", "iso", "open_admin"]


class AdminError(Exception):
    """An operator command cannot do what was asked; the message says why and what to do."""


def iso(ts: float | None) -> str | None:
    """Seconds since the epoch as an ISO 8601 UTC timestamp (``None`` stays ``None``)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _safe_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    # Registration metadata is cosmetic (logo_uri, contacts, ...), but a client may send
    # anything: drop whatever is named like a credential rather than print it.
    return {k: v for k, v in metadata.items() if not is_credential_key(k)}


class Admin:
    """What the operator commands do, on an opened storage."""

    def __init__(
        self,
        config: Config,
        storage: Storage,
        *,
        clock: Clock | None = None,
        auditor: Auditor | None = None,
    ) -> None:
        self.config = config
        self.storage = storage
        self.clock = clock or SystemClock()
        self.auditor = auditor or Auditor()
        self._static = static_clients(config)

    # ------------------------------------------------------------------ clients
    def _client_view(self, client: ClientRecord, grants: int, *, full: bool) -> dict[str, Any]:
        now = self.clock.now()
        view: dict[str, Any] = {
            "client_id": client.client_id,
            "kind": str(client.kind),
            "client_name": client.client_name,
            "type": "public" if client.is_public else "confidential",
            "token_endpoint_auth_method": client.token_endpoint_auth_method,
            "redirect_uris": list(client.redirect_uris),
            "created_at": iso(client.created_at) if client.created_at else None,
            "expires_at": iso(client.expires_at),
            "expired": client.expires_at is not None and client.expires_at <= now,
            "last_used_at": iso(_float(client.metadata.get("last_used_at"))),
            "live_grants": grants,
        }
        if full:
            view.update(
                {
                    "scope": client.scope,
                    "grant_types": list(client.grant_types),
                    "application_type": client.application_type,
                    "registered_ip": client.registered_ip,
                    "has_secret": client.secret_hash is not None,
                    "has_registration_access_token": (
                        client.registration_access_token_hash is not None
                    ),
                    "metadata": _safe_metadata(
                        {k: v for k, v in client.metadata.items() if k != "last_used_at"}
                    ),
                }
            )
        return view

    async def _grant_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for grant in await self.storage.list_grants():
            counts[grant.client_id] = counts.get(grant.client_id, 0) + 1
        return counts

    async def list_clients(self) -> list[dict[str, Any]]:
        """Static clients (from the config) first, then registered ones (storage)."""
        counts = await self._grant_counts()
        views = [
            self._client_view(c, counts.get(c.client_id, 0), full=False)
            for c in self._static.values()
        ]
        stored = sorted(await self.storage.list_clients(), key=lambda c: c.created_at)
        views.extend(
            self._client_view(c, counts.get(c.client_id, 0), full=False)
            for c in stored
            if c.client_id not in self._static
        )
        return views

    async def show_client(self, client_id: str) -> dict[str, Any]:
        client = self._static.get(client_id) or await self.storage.get_client(client_id)
        if client is None:
            raise AdminError(f"no client {client_id!r}; `clients list` shows every client")
        grants = await self.storage.list_grants(client_id=client_id)
        return self._client_view(client, len(grants), full=True)

    async def delete_client(self, client_id: str) -> dict[str, Any]:
        """Delete a registered client; storage revokes its grants with it."""
        if client_id in self._static:
            raise AdminError(
                f"client {client_id!r} is defined in the config file; remove it under "
                "`clients:` there and restart (or reload) the daemon"
            )
        client = await self.storage.get_client(client_id)
        if client is None:
            raise AdminError(f"no client {client_id!r}; `clients list` shows every client")
        grants = await self.storage.list_grants(client_id=client_id)
        deleted = await self.storage.delete_client(client_id)
        if deleted:
            self.auditor.emit(
                "client.deleted", client_id=client_id, reason="admin", grants=len(grants)
            )
        return {"client_id": client_id, "deleted": deleted, "revoked_grants": len(grants)}

    # ------------------------------------------------------------------ grants
    def _grant_view(self, grant: GrantRecord) -> dict[str, Any]:
        now = self.clock.now()
        client = self._static.get(grant.client_id)
        return {
            "grant_id": grant.grant_id,
            "subject": grant.subject,
            "username": grant.username,
            "email": grant.email,
            "client_id": grant.client_id,
            "client_name": client.client_name if client is not None else None,
            "resource": grant.resource,
            "scopes": list(grant.scopes),
            "provider": grant.provider,
            "created_at": iso(grant.created_at),
            "expires_at": iso(grant.expires_at),
            "expired": grant.expires_at <= now,
            "has_upstream_token": grant.upstream is not None,
        }

    async def _matching_grants(
        self, user: str | None, client_id: str | None, grant_id: str | None
    ) -> list[GrantRecord]:
        if grant_id is not None:
            grant = await self.storage.get_grant(grant_id)
            found = [] if grant is None or grant.revoked_at is not None else [grant]
        else:
            found = await self.storage.list_grants(client_id=client_id)
        if client_id is not None:
            found = [g for g in found if g.client_id == client_id]
        if user is not None:
            email = user.casefold()
            # A subject is matched exactly; an email address case-insensitively (the same
            # person may appear as Alice@Example.com and alice@example.com).
            found = [
                g
                for g in found
                if g.subject == user or (g.email is not None and g.email.casefold() == email)
            ]
        return found

    async def list_grants(
        self, *, user: str | None = None, client_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Live (unrevoked) grants, optionally of one user (subject or email) or client."""
        grants = await self._matching_grants(user, client_id, None)
        return [self._grant_view(g) for g in grants]

    async def revoke_grants(
        self,
        *,
        user: str | None = None,
        client_id: str | None = None,
        grant_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Revoke every matching grant and every token under it (incident response).

        At least one filter is required: revoking everything is never an accident.
        """
        if user is None and client_id is None and grant_id is None:
            raise AdminError("name what to revoke: --user, --client or --grant")
        revoked: list[dict[str, Any]] = []
        now = self.clock.now()
        for grant in await self._matching_grants(user, client_id, grant_id):
            if await self.storage.revoke_grant(grant.grant_id, now):
                self.auditor.emit(
                    "grant.revoked",
                    reason="admin",
                    grant_id=grant.grant_id,
                    client_id=grant.client_id,
                    subject=grant.subject,
                )
                revoked.append(self._grant_view(grant))
        return revoked

    # ------------------------------------------------------------------ keys
    def encryption_keys(self) -> list[dict[str, Any]]:
        """The key ring: ids and which key encrypts. Key values are never read out."""
        sec = self.config.security
        if sec.encryption_keys:
            return [
                {
                    "type": "encryption",
                    "id": key.id,
                    "state": "primary" if index == 0 else "decrypt-only",
                    "source": "config",
                }
                for index, key in enumerate(sec.encryption_keys)
            ]
        directory = state_dir(self.config)
        if directory is None:
            return []
        path = directory / KEYS_FILE
        key_id = _generated_key_id(path)
        if key_id is None:
            return []
        return [{"type": "encryption", "id": key_id, "state": "primary", "source": str(path)}]

    async def signing_keys(self) -> list[dict[str, Any]]:
        """The JWT signing keys in storage (public facts only: never the private key)."""
        from mcp_oauthd.service.jwt import classify

        records = await self.storage.list_signing_keys()
        retain = self.config.tokens.access_token_ttl + self.config.tokens.jwt.key_overlap
        states = classify(records, self.clock.now(), retain)
        state_of: dict[str, str] = {}
        if states is not None:
            state_of[states.current.kid] = "current"
            state_of.update({k.kid: "next" for k in states.following})
            state_of.update({k.kid: "previous" for k in states.previous})
            state_of.update({k.kid: "retiring" for k in states.dead})
        return [
            {
                "type": "signing",
                "id": record.kid,
                "state": state_of.get(record.kid, "unknown"),
                "alg": record.alg,
                "generation": record.generation,
                "created_at": iso(record.created_at),
                "activates_at": iso(record.activates_at),
            }
            for record in records
        ]

    async def list_keys(self) -> list[dict[str, Any]]:
        return [*self.encryption_keys(), *await self.signing_keys()]

    async def rotate_signing_key(self) -> dict[str, Any]:
        """Make a new JWT signing key sign from now on (the old one stays published)."""
        if self.config.tokens.format != "jwt":
            raise AdminError(
                "access tokens are opaque (tokens.format: opaque): there is no signing key "
                "to rotate. Encryption keys rotate in the config: put the new key first "
                "under security.encryption_keys and keep the old one after it"
            )
        from mcp_oauthd.service.jwt import SigningKeyManager

        keyring = load_key_material(self.config).keyring
        manager = SigningKeyManager(self.config, self.storage, keyring, self.clock)
        record = await manager.rotate()
        self.auditor.emit("signing_key.rotated", kid=record.kid, reason="admin")
        return {
            "type": "signing",
            "id": record.kid,
            "state": "current",
            "alg": record.alg,
            "generation": record.generation,
            "created_at": iso(record.created_at),
            "activates_at": iso(record.activates_at),
        }

    # ------------------------------------------------------------------ housekeeping
    async def gc(self, now: float | None = None) -> int:
        """Delete every expired record now (the daemon also does this every minute)."""
        return await self.storage.gc(self.clock.now() if now is None else now)


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _generated_key_id(path: Path) -> str | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    key_id = data.get("encryption_key_id") if isinstance(data, dict) else None
    return str(key_id) if key_id else None


@asynccontextmanager
async def open_admin(
    config: Config, *, clock: Clock | None = None, auditor: Auditor | None = None
) -> AsyncIterator[Admin]:
    """Open the configured storage for operator commands, and close it afterwards."""
    if isinstance(config.storage, MemoryStorageConfig):
        raise AdminError(
            "the config uses memory storage, which lives inside the daemon process; "
            "operator commands need sqlite or redis storage"
        )
    if isinstance(config.storage, SqliteStorageConfig):
        path = config.storage.path.expanduser()
        if not path.exists():
            # Opening would create an empty database: an operator pointing at the wrong
            # config would see "no grants" instead of an error.
            raise AdminError(
                f"no database at {path}: is this the daemon's config? (the daemon creates "
                "it on first start)"
            )
    storage = build_storage(config.storage)
    await storage.open()
    try:
        yield Admin(config, storage, clock=clock, auditor=auditor)
    finally:
        await storage.close()


# ---------------------------------------------------------------------- output
def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "-"
    return str(value)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Rows as an aligned, human-readable table with an upper-case header."""
    header = [c.upper().replace("_", " ") for c in columns]
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines.extend(
        "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells
    )
    return "\n".join(lines)

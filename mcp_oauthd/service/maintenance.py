"""Operator maintenance on stored state: re-encrypting secrets under the primary key.

``mcp-oauthd keys rotate-encryption`` runs :func:`reencrypt` against the configured
storage (sqlite or redis) while the daemon serves. Rotating the encryption key is three
steps; this is the middle one:

1. put the new key *first* in ``security.encryption_keys`` (the primary encrypts), keep
   the old one after it (every key decrypts), and restart or roll every replica;
2. run ``mcp-oauthd keys rotate-encryption``: every grant's upstream token set still
   under an old key is decrypted and sealed again under the primary;
3. once the report says nothing depends on the old key any more, remove it.

What is stored encrypted, and how each kind is handled:

- **grants' upstream token sets** (long-lived): re-encrypted here;
- **JWT signing keys** (``tokens.format: jwt``): reported, not rewritten. The storage
  contract has no atomic replace for a signing key, and a delete-then-add would let a
  replica see the key vanish and mint a replacement for its generation. Keys made after
  step 1 are sealed under the new key; older ones retire on their own with the
  rotation schedule (``tokens.jwt``). The report names those still under an old key;
- **authorization codes and login flows** (``code_ttl``, ``flow_ttl``: minutes): they
  expire before anyone would remove a key; wait ``tokens.flow_ttl`` after step 1.

Client secrets, tokens and codes are stored only as hashes; the refresh-token successor
is sealed under a key derived from the refresh token itself: none of them depend on the
key ring.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mcp_oauthd.security.audit import Auditor
from mcp_oauthd.security.crypto import DecryptionError, KeyRing
from mcp_oauthd.service.upstream import _UPSTREAM_AD as UPSTREAM_AD
from mcp_oauthd.storage.base import Storage


@dataclass
class ReencryptionReport:
    primary: str
    reencrypted: int = 0  # grants whose upstream token set was sealed again
    current: int = 0  # grants already under the primary key (or holding none)
    raced: int = 0  # rewritten by the daemon meanwhile (it seals with its own primary)
    unreadable: list[str] = field(default_factory=list)  # grant ids; no key decrypts them
    signing_keys_on_old_keys: dict[str, str] = field(default_factory=dict)  # kid -> key id

    @property
    def ok(self) -> bool:
        return not self.unreadable

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready; ids only, never key material or ciphertext."""
        return {
            "primary_key": self.primary,
            "grants_reencrypted": self.reencrypted,
            "grants_already_current": self.current,
            # Changed by the server between read and write: left as it wrote them (it seals
            # with its own primary key); run the command again to check them.
            "grants_changed_meanwhile": self.raced,
            # No configured key decrypts these: their users must sign in again.
            "grants_unreadable": list(self.unreadable),
            # Retire with the signing-key rotation; keep their key in the ring until then.
            "signing_keys_on_old_keys": [
                f"{kid} ({key_id})" for kid, key_id in sorted(self.signing_keys_on_old_keys.items())
            ],
        }


def _key_id(envelope: str) -> str:
    parts = envelope.split(".", 2)
    return parts[1] if len(parts) == 3 else "?"


async def reencrypt(
    storage: Storage, keyring: KeyRing, auditor: Auditor | None = None
) -> ReencryptionReport:
    """Seal every stored upstream token set under ``keyring``'s primary key.

    Meant to run while the daemon serves: each grant is read again just before the write
    and skipped if the daemon changed it, and ``update_grant_upstream`` never revives a
    revoked grant. The storage contract has no compare-and-set for the upstream field, so
    a window of one storage round trip remains in which a concurrent upstream refresh
    could be overwritten by the (older) token set it replaced; the daemon then refreshes
    upstream again with the older refresh token, which an IdP that rotates refresh
    tokens refuses, and that user signs in again. Run it when traffic is low.
    """
    report = ReencryptionReport(primary=keyring.primary_id)
    for grant in await storage.list_grants():
        envelope = grant.upstream
        if envelope is None or not keyring.needs_reencryption(envelope):
            report.current += 1
            continue
        try:
            plaintext = keyring.decrypt(envelope, UPSTREAM_AD)
        except DecryptionError:
            report.unreadable.append(grant.grant_id)
            continue
        sealed = keyring.encrypt(plaintext, UPSTREAM_AD)
        latest = await storage.get_grant(grant.grant_id)
        if latest is None or latest.revoked_at is not None:
            continue  # revoked meanwhile: nothing left to protect
        if latest.upstream != envelope:
            report.raced += 1
            continue
        if await storage.update_grant_upstream(grant.grant_id, sealed, latest.upstream_expires_at):
            report.reencrypted += 1
    for key in await storage.list_signing_keys():
        if keyring.needs_reencryption(key.private_key):
            report.signing_keys_on_old_keys[key.kid] = _key_id(key.private_key)
    if auditor is not None:
        auditor.emit(
            "encryption.reencrypted",
            primary_key=report.primary,
            grants=report.reencrypted,
            unreadable=len(report.unreadable),
            signing_keys_pending=len(report.signing_keys_on_old_keys),
        )
    return report

"""Secrets at rest and in cookies.

- ``KeyRing``: AES-256-GCM with key ids. The primary (first) key encrypts; every key
  decrypts, so keys rotate without a flag day. Envelope: ``v1.<kid>.<b64(nonce|ct)>``.
- ``sha256_hex``: how tokens, codes and generated secrets are stored (only as a hash).
- ``Signer``: HMAC-SHA256 for values we hand to browsers (cookies, CSRF tokens).
- Every comparison of a secret is constant-time (``hmac.compare_digest``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class DecryptionError(Exception):
    """Ciphertext could not be decrypted (unknown key id, tampering, wrong key)."""


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def random_token(nbytes: int = 32) -> str:
    """A URL-safe random string with ``nbytes`` bytes of entropy (256 bits by default)."""
    return secrets.token_urlsafe(nbytes)


def constant_time_equals(a: str, b: str) -> bool:
    # compare_digest returns early when the lengths differ, which tells an attacker the
    # length of a configured secret; comparing fixed-size digests hides it too.
    return hmac.compare_digest(
        hashlib.sha256(a.encode("utf-8")).digest(), hashlib.sha256(b.encode("utf-8")).digest()
    )


class KeyRing:
    def __init__(self, keys: Iterable[tuple[str, bytes]]) -> None:
        self._keys: dict[str, AESGCM] = {}
        self._primary: str | None = None
        for kid, key in keys:
            if len(key) != 32:
                raise ValueError(f"encryption key {kid} must be 32 bytes")
            if kid in self._keys:
                raise ValueError(f"encryption key id {kid} appears twice")
            self._keys[kid] = AESGCM(key)
            if self._primary is None:
                self._primary = kid
        if self._primary is None:
            raise ValueError("the key ring needs at least one key")

    @property
    def primary_id(self) -> str:
        assert self._primary is not None
        return self._primary

    @property
    def key_ids(self) -> list[str]:
        return list(self._keys)

    def encrypt(self, plaintext: bytes, associated_data: bytes = b"") -> str:
        nonce = secrets.token_bytes(12)
        ct = self._keys[self.primary_id].encrypt(nonce, plaintext, associated_data)
        return f"v1.{self.primary_id}.{b64u(nonce + ct)}"

    def decrypt(self, envelope: str, associated_data: bytes = b"") -> bytes:
        try:
            version, kid, body = envelope.split(".", 2)
        except ValueError:
            raise DecryptionError("malformed envelope") from None
        aes = self._keys.get(kid)
        if version != "v1" or aes is None:
            raise DecryptionError("unknown key id")
        raw = b64u_decode(body)
        try:
            return aes.decrypt(raw[:12], raw[12:], associated_data)
        except InvalidTag:
            raise DecryptionError("authentication failed") from None

    def needs_reencryption(self, envelope: str) -> bool:
        return not envelope.startswith(f"v1.{self.primary_id}.")


def seal_with_secret(secret: str, plaintext: bytes, context: bytes) -> str:
    """Encrypt under a key derived (HKDF) from a high-entropy secret the caller holds.

    Used for the refresh-token successor: only someone presenting the old refresh token
    can read its successor back, so nothing is stored in clear.
    """
    key = HKDF(algorithm=SHA256(), length=32, salt=None, info=context).derive(secret.encode())
    nonce = secrets.token_bytes(12)
    return b64u(nonce + AESGCM(key).encrypt(nonce, plaintext, context))


def open_with_secret(secret: str, sealed: str, context: bytes) -> bytes:
    key = HKDF(algorithm=SHA256(), length=32, salt=None, info=context).derive(secret.encode())
    raw = b64u_decode(sealed)
    try:
        return AESGCM(key).decrypt(raw[:12], raw[12:], context)
    except InvalidTag:
        raise DecryptionError("authentication failed") from None


class Signer:
    """HMAC-SHA256 signatures for browser-held values, with purpose separation."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the cookie secret must be at least 32 bytes")
        self._key = key

    def mac(self, purpose: str, value: str) -> str:
        msg = purpose.encode() + b"\x00" + value.encode()
        return b64u(hmac.new(self._key, msg, hashlib.sha256).digest())

    def sign(self, purpose: str, value: str) -> str:
        return f"{value}.{self.mac(purpose, value)}"

    def unsign(self, purpose: str, signed: str) -> str | None:
        value, _, mac = signed.rpartition(".")
        if not value or not constant_time_equals(mac, self.mac(purpose, value)):
            return None
        return value

    def verify(self, purpose: str, value: str, mac: str) -> bool:
        return constant_time_equals(mac, self.mac(purpose, value))

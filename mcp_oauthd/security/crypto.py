"""Secrets at rest and in cookies.

- ``KeyRing``: AES-256-GCM with key ids. The primary (first) key encrypts; every key
  decrypts, so keys rotate without a flag day. Envelope: ``v1.<kid>.<b64(nonce|ct)>``.
- ``sha256_hex``: how tokens, codes and generated secrets are stored (only as a hash).
- ``Signer``: HMAC-SHA256 for values we hand to browsers (cookies, CSRF tokens).
- Every comparison of a secret is constant-time (``hmac.compare_digest``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


class DecryptionError(Exception):
    """Ciphertext could not be decrypted (unknown key id, tampering, wrong key)."""


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def b64u(data: bytes) -> str:
    # What base64.urlsafe_b64encode does, minus its Python-level wrappers: this runs
    # several times per token request.
    return binascii.b2a_base64(data, newline=False).rstrip(b"=").translate(_URLSAFE).decode("ascii")


def b64u_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def random_token(nbytes: int = 32) -> str:
    """A URL-safe random string with ``nbytes`` bytes of entropy (256 bits by default)."""
    return secrets.token_urlsafe(nbytes)


def random_tokens(*nbytes: int) -> list[str]:
    """One ``random_token(n)`` for each ``n``, from a single CSPRNG draw.

    Slices of one uniformly random byte string are independent and uniform, so this is
    the same as calling ``random_token`` for each size; a token request needs several
    values and each draw is a system call.
    """
    raw = secrets.token_bytes(sum(nbytes))
    out: list[str] = []
    start = 0
    for n in nbytes:
        out.append(b64u(raw[start : start + n]))
        start += n
    return out


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


# RFC 2104 §2: an HMAC key is zero-padded to the hash's block size and XORed with ipad
# (0x36 bytes) and opad (0x5c bytes); translate tables do the XOR in C (as the standard
# library's hmac module does for digests OpenSSL does not provide).
_SHA256_BLOCK = 64
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))
# RFC 5869 §2.2: without a salt, HKDF-Extract keys its HMAC with HashLen zero bytes. That
# key never changes, so its inner and outer hash states (after the padded key block) are
# computed once and copied per call.
_EXTRACT_INNER = hashlib.sha256(bytes(_SHA256_BLOCK).translate(_IPAD))
_EXTRACT_OUTER = hashlib.sha256(bytes(_SHA256_BLOCK).translate(_OPAD))


def hkdf_sha256(ikm: bytes, info: bytes) -> bytes:
    """RFC 5869 HKDF with SHA-256, no salt and a 32-byte output key.

    Byte for byte what ``cryptography``'s ``HKDF(SHA256(), 32, salt=None, info=info)``
    derives (a test checks it), at about a quarter of the cost: that spends most of its
    time setting up OpenSSL objects per call, this is four SHA-256 finalisations with
    hashlib. It runs on every refresh grant (``seal_with_secret``).
    """
    # §2.2 Extract: PRK = HMAC-SHA256(salt = 32 zero bytes, IKM).
    inner = _EXTRACT_INNER.copy()
    inner.update(ikm)
    outer = _EXTRACT_OUTER.copy()
    outer.update(inner.digest())
    prk = outer.digest()
    # §2.3 Expand: L = HashLen, so N = 1 and OKM = T(1) = HMAC-SHA256(PRK, info | 0x01).
    # PRK (32 bytes) is shorter than the block, so it is only zero-padded (RFC 2104 §2).
    key = prk + bytes(_SHA256_BLOCK - len(prk))
    t1_inner = hashlib.sha256(key.translate(_IPAD) + info + b"\x01").digest()
    return hashlib.sha256(key.translate(_OPAD) + t1_inner).digest()


def seal_with_secret(secret: str, plaintext: bytes, context: bytes) -> str:
    """Encrypt under a key derived (HKDF) from a high-entropy secret the caller holds.

    Used for the refresh-token successor: only someone presenting the old refresh token
    can read its successor back, so nothing is stored in clear. Envelope:
    ``b64u(nonce | AES-256-GCM ciphertext and tag)``, ``context`` as associated data.
    """
    key = hkdf_sha256(secret.encode(), context)
    nonce = secrets.token_bytes(12)
    return b64u(nonce + AESGCM(key).encrypt(nonce, plaintext, context))


def open_with_secret(secret: str, sealed: str, context: bytes) -> bytes:
    key = hkdf_sha256(secret.encode(), context)
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

"""PKCE (RFC 7636), S256 only (OAuth 2.1 §4.1.1; `plain` is refused, RFC 9700 §2.1.1)."""

from __future__ import annotations

import hashlib
import re
import secrets

from mcp_oauthd.oauth.errors import InvalidGrant, InvalidRequest
from mcp_oauthd.security.crypto import b64u, constant_time_equals

# RFC 7636 §4.1: code-verifier = 43*128unreserved
_VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
# A S256 challenge is BASE64URL(SHA256(verifier)) without padding: exactly 43 characters.
_CHALLENGE = re.compile(r"^[A-Za-z0-9\-_]{43}$")


def s256(verifier: str) -> str:
    return b64u(hashlib.sha256(verifier.encode("ascii")).digest())


def new_pair() -> tuple[str, str]:
    """A fresh (verifier, challenge) for our own upstream leg."""
    verifier = secrets.token_urlsafe(48)  # 64 characters, within 43..128
    return verifier, s256(verifier)


def validate_challenge(challenge: str | None, method: str | None) -> str:
    if not challenge:
        raise InvalidRequest("code_challenge is required (PKCE, RFC 7636)")
    if method != "S256":
        # RFC 7636 §4.3 defaults a missing method to "plain", which we do not support.
        raise InvalidRequest("code_challenge_method must be S256")
    if not _CHALLENGE.match(challenge):
        raise InvalidRequest("code_challenge is not a valid S256 challenge")
    return challenge


def verify(verifier: str | None, challenge: str) -> None:
    """RFC 7636 §4.6: the server MUST verify the verifier against the stored challenge."""
    if not verifier:
        raise InvalidRequest("code_verifier is required")
    if not _VERIFIER.match(verifier):
        raise InvalidGrant("code_verifier is malformed")
    if not constant_time_equals(s256(verifier), challenge):
        raise InvalidGrant("PKCE verification failed")

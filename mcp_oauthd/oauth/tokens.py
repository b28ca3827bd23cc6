"""Token and code values: 256-bit random with a readable type prefix, stored as SHA-256.

The prefixes let secret scanners and humans tell the kinds apart, and let us route a
presented token to the right lookup without a second storage call.
"""

from __future__ import annotations

from mcp_oauthd.security.crypto import random_token, random_tokens, sha256_hex

ACCESS_PREFIX = "mcpat_"
REFRESH_PREFIX = "mcprt_"
CODE_PREFIX = "mcpac_"
CLIENT_SECRET_PREFIX = "mcpcs_"
REGISTRATION_TOKEN_PREFIX = "mcprg_"


def new_access_token() -> str:
    return ACCESS_PREFIX + random_token(32)


def new_refresh_token() -> str:
    return REFRESH_PREFIX + random_token(32)


def new_code() -> str:
    return CODE_PREFIX + random_token(32)


def new_id() -> str:
    """A record id (grant id, jti): 128 bits, not a credential."""
    return random_token(16)


def new_token_values() -> tuple[str, str, str]:
    """``(new_id(), new_access_token(), new_refresh_token())`` from one CSPRNG draw: the
    values a token response needs (see ``random_tokens``)."""
    jti, access, refresh = random_tokens(16, 32, 32)
    return jti, ACCESS_PREFIX + access, REFRESH_PREFIX + refresh


def token_hash(value: str) -> str:
    return sha256_hex(value)


def kind_of(value: str) -> str | None:
    if value.startswith(ACCESS_PREFIX):
        return "access_token"
    if value.startswith(REFRESH_PREFIX):
        return "refresh_token"
    return None

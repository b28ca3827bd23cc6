"""The cheap paths of the token endpoint compute exactly what the straightforward code did.

The refresh grant seals its successor under a key derived with a hashlib HKDF instead of
``cryptography``'s, writes the sealed JSON out by hand and draws its random values at
once; these tests pin each of those to the reference it replaced, so a sealed successor
stays readable across the change (they live in storage for the grace window) and the
values keep their shape.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mcp_oauthd.oauth import tokens
from mcp_oauthd.security import crypto
from mcp_oauthd.security.crypto import (
    DecryptionError,
    b64u,
    hkdf_sha256,
    open_with_secret,
    random_tokens,
    seal_with_secret,
)
from mcp_oauthd.service import token as token_service
from mcp_oauthd.service.token import _successor_plaintext
from tests.flows.conftest import Daemon

CONTEXT = b"mcp-oauthd refresh successor v1"


def reference_hkdf(ikm: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=SHA256(), length=32, salt=None, info=info).derive(ikm)


@pytest.mark.parametrize("ikm_len", [0, 1, 32, 49, 63, 64, 65, 200])
@pytest.mark.parametrize("info_len", [0, 1, 31, 55, 64, 100])
def test_the_hkdf_is_rfc_5869_as_cryptography_computes_it(ikm_len: int, info_len: int) -> None:
    for _ in range(5):
        ikm, info = os.urandom(ikm_len), os.urandom(info_len)
        assert hkdf_sha256(ikm, info) == reference_hkdf(ikm, info)


def test_the_hkdf_matches_the_rfc_5869_test_vector_without_salt() -> None:
    # RFC 5869 Appendix A.3 (SHA-256, zero-length salt and info), truncated to 32 bytes.
    ikm = bytes.fromhex("0b" * 22)
    okm = "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
    assert hkdf_sha256(ikm, b"").hex() == okm


def test_a_successor_sealed_before_the_change_still_opens_and_the_other_way() -> None:
    secret = tokens.new_refresh_token()
    plaintext = b'{"access_token": "x"}'
    key = reference_hkdf(secret.encode(), CONTEXT)
    nonce = os.urandom(12)
    legacy = b64u(nonce + AESGCM(key).encrypt(nonce, plaintext, CONTEXT))
    assert open_with_secret(secret, legacy, CONTEXT) == plaintext
    raw = crypto.b64u_decode(seal_with_secret(secret, plaintext, CONTEXT))
    assert AESGCM(key).decrypt(raw[:12], raw[12:], CONTEXT) == plaintext


def test_only_the_holder_of_the_old_token_opens_the_successor() -> None:
    secret = tokens.new_refresh_token()
    sealed = seal_with_secret(secret, b"successor", CONTEXT)
    with pytest.raises(DecryptionError):
        open_with_secret(tokens.new_refresh_token(), sealed, CONTEXT)
    with pytest.raises(DecryptionError):
        open_with_secret(secret, sealed, CONTEXT + b"x")


@pytest.mark.parametrize(
    "body",
    [
        {
            "access_token": tokens.new_access_token(),
            "token_type": "Bearer",
            "expires_in": 3600,
            "scope": "files:read files:write",
            "refresh_token": tokens.new_refresh_token(),
        },
        {
            # A JWT access token, an empty scope and characters JSON must escape.
            "access_token": "eyJhbGciOi.eyJzdWIiOi.sig-_",
            "token_type": "Bearer",
            "expires_in": 0,
            "scope": "",
            "refresh_token": 'mcprt_"\\\u00e9\n',
        },
    ],
)
@pytest.mark.parametrize("expires_at", [1_700_000_000.123456, 1e9, 0.1 + 0.2])
def test_the_sealed_response_is_the_json_json_dumps_writes(
    body: dict[str, Any], expires_at: float
) -> None:
    expected = json.dumps({**body, "expires_at": expires_at}).encode()
    assert _successor_plaintext(body, expires_at) == expected
    assert json.loads(_successor_plaintext(body, expires_at))["expires_at"] == expires_at


def test_a_response_of_another_shape_is_sealed_with_json_dumps() -> None:
    body = {"access_token": "a", "token_type": "Bearer", "expires_in": 1, "scope": "s"}
    assert _successor_plaintext(body, 2.0) == json.dumps({**body, "expires_at": 2.0}).encode()


def test_one_draw_gives_values_of_the_usual_shape() -> None:
    jti, access, refresh = tokens.new_token_values()
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", jti)
    assert re.fullmatch(r"mcpat_[A-Za-z0-9_-]{43}", access)
    assert re.fullmatch(r"mcprt_[A-Za-z0-9_-]{43}", refresh)
    assert len(tokens.new_id()) == len(jti)
    assert len(tokens.new_access_token()) == len(access)
    assert len(tokens.new_refresh_token()) == len(refresh)
    values = [v for _ in range(200) for v in random_tokens(16, 32, 32)]
    assert len(set(values)) == len(values)


async def test_a_refresh_draws_randomness_twice_and_replays_identically(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One draw for the jti and both tokens, one for the seal's nonce; the grace replay
    opens what the cheap path sealed."""
    first = await daemon.tokens()
    draws: list[int] = []
    real = crypto.secrets.token_bytes

    def counting(n: int) -> bytes:
        draws.append(n)
        return real(n)

    monkeypatch.setattr(crypto.secrets, "token_bytes", counting)
    form = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    status, second, _ = await daemon.token({**form, "client_id": "cli"})
    assert status == 200
    # (Other layers, request ids say, may draw for themselves; these are the grant's.)
    assert (draws.count(80), draws.count(12)) == (1, 1)
    daemon.clock.advance(5)
    status, again, _ = await daemon.token({**form, "client_id": "cli"})
    assert status == 200
    assert again["access_token"] == second["access_token"]
    assert again["refresh_token"] == second["refresh_token"]
    assert again["expires_in"] == second["expires_in"] - 5
    assert token_service._SUCCESSOR_CONTEXT == CONTEXT

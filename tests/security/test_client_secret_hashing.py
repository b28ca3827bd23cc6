"""Client secrets: argon2 for human-chosen ones (verified off the event loop), SHA-256 for
generated 256-bit ones; both compared in constant time."""

from __future__ import annotations

from mcp_oauthd.service.clients import hash_secret, verify_secret, verify_secret_async


async def test_a_short_secret_is_hashed_with_argon2_and_verified_in_a_thread() -> None:
    hashed = hash_secret("short-secret")
    assert hashed.startswith("$argon2")
    assert await verify_secret_async(hashed, "short-secret")
    assert not await verify_secret_async(hashed, "short-secreT")


async def test_a_generated_secret_is_hashed_with_sha256() -> None:
    secret = "mcpcs_" + "x" * 43
    hashed = hash_secret(secret)
    assert hashed.startswith("sha256:")
    assert secret not in hashed
    assert await verify_secret_async(hashed, secret)
    assert not verify_secret(hashed, secret + "y")

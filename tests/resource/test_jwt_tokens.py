"""RFC 9068 JWT access tokens: verified with an independent library (PyJWT) against the
JWKS, keys shared through storage, rotation with overlap, revocation via introspection."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import jwt as pyjwt
import pytest

from mcp_oauthd.clock import FakeClock
from mcp_oauthd.oauth.tokens import token_hash
from mcp_oauthd.security.crypto import KeyRing
from mcp_oauthd.service.jwt import SigningKeyManager, rotate_signing_keys
from mcp_oauthd.storage.memory import MemoryStorage
from mcp_oauthd.storage.sqlite import SqliteStorage
from tests.conftest import base_config
from tests.resource.conftest import FILES, MAIL, RsDaemon, resources

pytestmark = pytest.mark.asyncio

DAY = 86_400
SHARED_KEYS = {
    "encryption_keys": [{"id": "shared", "key": "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="}],
    "cookie_secret": "a-cookie-secret-shared-by-the-replicas",
}


def jwt_tokens(alg: str = "ES256", **jwt: Any) -> dict[str, Any]:
    return {"format": "jwt", "jwt": {"alg": alg, **jwt}}


def header_of(token: str) -> dict[str, Any]:
    return dict(pyjwt.get_unverified_header(token))


def verify(token: str, jwks: dict[str, Any], daemon: RsDaemon, audience: str = FILES) -> Any:
    """What a resource server does locally: key by kid from the JWKS, signature, iss, aud,
    exp (against the daemon's fake clock), typ."""
    header = header_of(token)
    assert header["typ"] == "at+jwt"  # RFC 9068 §4: resource servers MUST check it
    keys = {k["kid"]: k for k in jwks["keys"]}
    key = pyjwt.PyJWK(keys[header["kid"]])
    now = daemon.clock.now()
    leeway = int(now - time.time()) + 10  # the fake clock runs in the future
    return pyjwt.decode(
        token,
        key,
        algorithms=[header["alg"]],
        audience=audience,
        issuer=daemon.config.issuer,
        leeway=leeway,
        options={"require": ["exp", "iat", "nbf", "sub", "jti", "client_id", "iss", "aud"]},
    )


@pytest.fixture
async def jrs(rs_factory: Any) -> RsDaemon:
    daemon: RsDaemon = await rs_factory(tokens=jwt_tokens())
    return daemon


async def test_a_jwt_access_token_verifies_against_the_jwks_with_pyjwt(jrs: RsDaemon) -> None:
    tokens = await jrs.tokens(scope="files:read files:write")
    token = tokens["access_token"]
    header = header_of(token)
    assert (header["alg"], header["typ"]) == ("ES256", "at+jwt")
    claims = verify(token, await jrs.jwks(), jrs)
    now = int(jrs.clock.now())
    assert claims["iss"] == jrs.config.issuer
    assert claims["aud"] == FILES
    assert claims["client_id"] == "cli"
    assert claims["scope"] == "files:read files:write"
    assert (claims["iat"], claims["nbf"], claims["exp"]) == (now, now, now + 3600)
    introspected = (await jrs.introspect(token))[1]
    assert introspected["active"] is True
    assert (introspected["jti"], introspected["sub"]) == (claims["jti"], claims["sub"])


async def test_a_tampered_or_foreign_jwt_is_refused(jrs: RsDaemon) -> None:
    token = (await jrs.tokens())["access_token"]
    head, body, sig = token.split(".")
    claims = json.loads(pyjwt.utils.base64url_decode(body))
    claims["scope"] = "files:read files:write"
    forged = ".".join(
        [head, pyjwt.utils.base64url_encode(json.dumps(claims).encode()).decode(), sig]
    )
    with pytest.raises(pyjwt.InvalidSignatureError):
        verify(forged, await jrs.jwks(), jrs)
    assert (await jrs.introspect(forged))[1] == {"active": False}
    assert (await jrs.verify(forged))[0] == 401


async def test_the_metadata_points_at_the_jwks(jrs: RsDaemon) -> None:
    async with jrs.http.get(jrs.url + "/.well-known/oauth-authorization-server") as resp:
        assert (await resp.json())["jwks_uri"] == jrs.config.issuer + "/oauth/jwks"
    async with jrs.http.get(jrs.url + "/.well-known/oauth-protected-resource/mcp") as resp:
        assert (await resp.json())["jwks_uri"] == jrs.config.issuer + "/oauth/jwks"


@pytest.mark.parametrize("alg", ["EdDSA", "Ed25519"])
async def test_ed25519_keys_sign_when_configured(rs_factory: Any, alg: str) -> None:
    daemon: RsDaemon = await rs_factory(tokens=jwt_tokens(alg))
    token = (await daemon.tokens())["access_token"]
    jwks = await daemon.jwks()
    assert {k["kty"] for k in jwks["keys"]} == {"OKP"}
    assert header_of(token)["alg"] == alg
    if alg == "EdDSA":  # PyJWT knows the RFC 8037 name; the RFC 9864 one is newer
        assert verify(token, jwks, daemon)["aud"] == FILES
    assert (await daemon.introspect(token))[1]["active"] is True


async def test_the_jwks_publishes_the_current_key_and_the_next_one_ahead_of_use(
    jrs: RsDaemon,
) -> None:
    token = (await jrs.tokens())["access_token"]
    jwks = await jrs.jwks()
    assert len(jwks["keys"]) == 2
    assert all("d" not in k for k in jwks["keys"])  # public halves only
    current, following = [k["kid"] for k in jwks["keys"]]
    assert header_of(token)["kid"] == current
    # One rotation interval later the pre-published key signs, with no JWKS change needed.
    jrs.clock.advance(30 * DAY)
    rotated = (await jrs.tokens())["access_token"]
    assert header_of(rotated)["kid"] == following
    assert verify(rotated, jwks, jrs)["aud"] == FILES  # the old cached JWKS still works


async def test_old_tokens_still_verify_during_the_overlap_and_keys_retire_after(
    jrs: RsDaemon,
) -> None:
    old = (await jrs.tokens())["access_token"]
    old_kid = header_of(old)["kid"]
    jrs.clock.advance(30 * DAY - 60)  # the old key signs until the rotation...
    last_old = (await jrs.tokens())["access_token"]
    assert header_of(last_old)["kid"] == old_kid
    jrs.clock.advance(60)  # ...and then the next one takes over
    new = (await jrs.tokens())["access_token"]
    assert header_of(new)["kid"] != old_kid
    jwks = await jrs.jwks()
    assert jwks["keys"][0]["kid"] == old_kid
    assert len(jwks["keys"]) == 3  # previous, current, and the next one again
    for token in (last_old, new):
        assert verify(token, jwks, jrs)["aud"] == FILES
        assert (await jrs.introspect(token))[1]["active"] is True
    # The old key stays published while its last token lives plus the overlap (1 day).
    jrs.clock.advance(3600 + DAY - 120)
    assert old_kid in {k["kid"] for k in (await jrs.jwks())["keys"]}
    jrs.clock.advance(120)
    assert old_kid not in {k["kid"] for k in (await jrs.jwks())["keys"]}
    assert old_kid not in {k.kid for k in await jrs.storage.list_signing_keys()}


async def test_a_revoked_jwt_introspects_inactive(jrs: RsDaemon) -> None:
    first = await jrs.tokens()
    async with jrs.http.post(
        jrs.url + "/oauth/revoke", data={"token": first["access_token"], "client_id": "cli"}
    ) as resp:
        assert resp.status == 200
    assert (await jrs.introspect(first["access_token"]))[1] == {"active": False}
    assert (await jrs.verify(first["access_token"]))[0] == 401
    second = await jrs.tokens()
    async with jrs.http.post(
        jrs.url + "/oauth/revoke", data={"token": second["refresh_token"], "client_id": "cli"}
    ) as resp:
        assert resp.status == 200
    assert (await jrs.introspect(second["access_token"]))[1] == {"active": False}


async def test_a_jwt_is_recorded_only_by_its_hash_and_jti(jrs: RsDaemon) -> None:
    token = (await jrs.tokens())["access_token"]
    record = await jrs.storage.get_access_token(token_hash(token))
    assert record is not None
    assert record.jti == pyjwt.decode(token, options={"verify_signature": False})["jti"]


async def test_a_jwt_for_another_resource_is_refused_there(jrs: RsDaemon) -> None:
    mail = (await jrs.tokens(resource=MAIL, scope="mail"))["access_token"]
    assert verify(mail, await jrs.jwks(), jrs, audience=MAIL)["scope"] == "mail"
    with pytest.raises(pyjwt.InvalidAudienceError):
        verify(mail, await jrs.jwks(), jrs, audience=FILES)
    assert (await jrs.introspect(mail))[1] == {"active": False}
    assert (await jrs.verify(mail))[0] == 401


async def test_private_keys_are_stored_encrypted(jrs: RsDaemon) -> None:
    records = await jrs.storage.list_signing_keys()
    assert len(records) == 2
    for record in records:
        assert record.private_key.startswith("v1.")
        assert "PRIVATE" not in record.private_key
        assert "d" not in record.public_jwk


async def test_two_replicas_on_one_storage_sign_and_publish_the_same_keys(
    rs_factory: Any,
) -> None:
    storage, clock = MemoryStorage(), FakeClock()
    one: RsDaemon = await rs_factory(
        tokens=jwt_tokens(), storage=storage, clock=clock, security=SHARED_KEYS
    )
    # Replicas share the issuer, the storage and the key ring (through the config).
    two: RsDaemon = await rs_factory(
        tokens=jwt_tokens(),
        storage=storage,
        clock=clock,
        security=SHARED_KEYS,
        issuer=one.config.issuer,
    )
    assert await one.jwks() == await two.jwks()
    token = (await one.tokens())["access_token"]
    assert verify(token, await two.jwks(), two)["aud"] == FILES
    clock.advance(30 * DAY)
    assert (
        header_of((await one.tokens())["access_token"])["kid"]
        == header_of((await two.tokens())["access_token"])["kid"]
    )
    assert await one.jwks() == await two.jwks()


async def test_concurrent_refreshes_by_many_replicas_rotate_once(tmp_path: Any) -> None:
    config = base_config(1, resources=resources(), tokens=jwt_tokens())
    storage, clock = MemoryStorage(), FakeClock()
    ring = KeyRing([("k1", b"\x01" * 32)])
    replicas = [SigningKeyManager(config, storage, ring, clock) for _ in range(8)]
    await asyncio.gather(*(r.refresh() for r in replicas))
    assert [k.generation for k in await storage.list_signing_keys()] == [1, 2]
    clock.advance(30 * DAY)
    await asyncio.gather(*(r.refresh() for r in replicas))
    assert [k.generation for k in await storage.list_signing_keys()] == [1, 2, 3]
    kids = {r.states().current.kid for r in replicas}  # type: ignore[union-attr]
    assert len(kids) == 1


async def test_the_background_task_rotates_on_the_clock(tmp_path: Any) -> None:
    config = base_config(1, resources=resources(), tokens=jwt_tokens(rotation_interval="1h"))
    storage, clock = MemoryStorage(), FakeClock()
    manager = SigningKeyManager(config, storage, KeyRing([("k1", b"\x02" * 32)]), clock)
    await manager.refresh()
    first = manager.states()
    assert first is not None
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)
        if len(slept) > 61:
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await manager.run_forever(60, sleep=sleep)
    later = manager.states()
    assert later is not None
    assert later.current.generation == first.current.generation + 1
    assert [k.generation for k in later.following] == [first.current.generation + 2]
    assert [k.kid for k in later.previous] == [first.current.kid]


async def test_a_forced_rotation_signs_with_a_new_key_at_once(jrs: RsDaemon) -> None:
    old = (await jrs.tokens())["access_token"]
    record = await jrs.signing_keys.rotate()
    new = (await jrs.tokens())["access_token"]
    assert header_of(new)["kid"] == record.kid != header_of(old)["kid"]
    jwks = await jrs.jwks()
    for token in (old, new):
        assert verify(token, jwks, jrs)["aud"] == FILES


async def test_changing_the_algorithm_rotates_to_a_key_of_the_new_kind(
    rs_factory: Any,
) -> None:
    storage, clock = MemoryStorage(), FakeClock()
    es: RsDaemon = await rs_factory(
        tokens=jwt_tokens("ES256"), storage=storage, clock=clock, security=SHARED_KEYS
    )
    old = (await es.tokens())["access_token"]
    ed: RsDaemon = await rs_factory(
        tokens=jwt_tokens("EdDSA"),
        storage=storage,
        clock=clock,
        security=SHARED_KEYS,
        issuer=es.config.issuer,
    )
    new = (await ed.tokens())["access_token"]
    assert header_of(new)["alg"] == "EdDSA"
    jwks = await ed.jwks()
    assert verify(old, jwks, ed)["aud"] == FILES  # the ES256 key stays published
    assert verify(new, jwks, ed)["aud"] == FILES


async def test_the_rotate_command_helper_rotates_the_keys_in_shared_storage(
    tmp_path: Any,
) -> None:
    config = base_config(
        1,
        resources=resources(),
        tokens=jwt_tokens(),
        storage={"type": "sqlite", "path": str(tmp_path / "oauthd.db")},
        security=SHARED_KEYS,
    )
    first = await rotate_signing_keys(config, SqliteStorage(config.storage))  # type: ignore[arg-type]
    second = await rotate_signing_keys(config, SqliteStorage(config.storage))  # type: ignore[arg-type]
    assert second.generation > first.generation
    storage = SqliteStorage(config.storage)  # type: ignore[arg-type]
    await storage.open()
    try:
        manager = SigningKeyManager(config, storage, KeyRing([("x", b"\x00" * 32)]), FakeClock())
        await manager.refresh(second.activates_at)
        states = manager.states(second.activates_at)
        assert states is not None and states.current.kid == second.kid
        assert first.kid in {k.kid for k in states.previous}
    finally:
        await storage.close()
    memory = base_config(1, resources=resources(), tokens=jwt_tokens())
    with pytest.raises(ValueError, match="memory storage"):
        await rotate_signing_keys(memory, MemoryStorage())
    with pytest.raises(ValueError, match="not jwt"):
        await rotate_signing_keys(base_config(1, resources=resources()), MemoryStorage())

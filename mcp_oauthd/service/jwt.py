"""JWT access tokens (RFC 9068) and the signing keys behind them.

Keys live in storage (``SigningKeyRecord``), private halves encrypted with the key ring,
so every replica and worker signs with and publishes the same keys. Each key has a
``generation``; the key that signs is the newest generation whose ``activates_at`` has
passed. Around it:

- **next**: the following generation, created as soon as its predecessor starts signing
  and activating one ``rotation_interval`` later, so it sits in every resource server's
  JWKS cache for a whole interval before the first token signed with it appears. Because
  every replica caches it too, all replicas switch to it at the same instant without
  talking to each other;
- **previous**: retired keys, published until every token they signed has expired plus
  ``key_overlap``, then deleted.

``refresh()`` (run at start-up and by a clock-driven background task) reads the shared
set, makes the rotations that are due and drops dead keys. Two replicas rotating at once
race on ``Storage.add_signing_key``, which admits one key per generation: the loser reads
the winner's key back. ``rotate()`` (the ``keys rotate`` command) makes a brand-new key
sign from now on and discards the pre-published next key too: a forced rotation is for a
suspected compromise, and the next key's private half was stored exactly like the
current one's. Resource servers meet the new ``kid`` and refetch the JWKS.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from joserfc import jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, KeyParameters, OKPKey

from mcp_oauthd.clock import Clock, SystemClock
from mcp_oauthd.config.models import Config, MemoryStorageConfig
from mcp_oauthd.oauth.errors import TemporarilyUnavailable
from mcp_oauthd.security.crypto import DecryptionError, KeyRing
from mcp_oauthd.storage.base import AccessTokenRecord, SigningKeyRecord, Storage, StorageError

log = structlog.get_logger("mcp_oauthd.jwt")

#: RFC 9068 §2.1: the ``typ`` header of a JWT access token.
ACCESS_TOKEN_TYP = "at+jwt"
#: How often the background task re-reads the shared key set (other replicas rotate too).
REFRESH_INTERVAL = 60.0
_MAX_ROUNDS = 8

SigningKey = ECKey | OKPKey


def is_jwt_shaped(value: str) -> bool:
    """A compact JWS: three base64url parts, the header a JSON object (``eyJ``)."""
    return value.startswith("eyJ") and value.count(".") == 2 and len(value) <= 8192


def _associated_data(kid: str) -> bytes:
    # Binds each encrypted private key to its kid: a swapped record does not decrypt.
    return b"mcp-oauthd jwt signing key:" + kid.encode()


def _generate(alg: str) -> SigningKey:
    params: KeyParameters = {"use": "sig", "alg": alg}
    if alg == "ES256":
        return ECKey.generate_key("P-256", parameters=params, auto_kid=True)
    return OKPKey.generate_key("Ed25519", parameters=params, auto_kid=True)


def _import(record: SigningKeyRecord, pem: bytes) -> SigningKey:
    params: KeyParameters = {"kid": record.kid, "use": "sig", "alg": record.alg}
    if record.alg == "ES256":
        return ECKey.import_key(pem, parameters=params)
    return OKPKey.import_key(pem, parameters=params)


def current_key(keys: list[SigningKeyRecord], now: float) -> SigningKeyRecord | None:
    """The key that signs at ``now``: the newest generation already active (before any is
    active, e.g. a replica whose clock runs behind, the oldest one)."""
    if not keys:
        return None
    active = [k for k in keys if k.activates_at <= now]
    if active:
        return max(active, key=lambda k: k.generation)
    return min(keys, key=lambda k: k.generation)


@dataclass(frozen=True)
class KeyStates:
    current: SigningKeyRecord
    following: list[SigningKeyRecord]  # newer generations, not yet signing
    previous: list[SigningKeyRecord]  # retired, still published
    dead: list[SigningKeyRecord]  # to delete: expired, or superseded before activation


def classify(
    keys: list[SigningKeyRecord], now: float, retain_after_retirement: float
) -> KeyStates | None:
    current = current_key(keys, now)
    if current is None:
        return None
    following, previous, dead = [], [], []
    for key in keys:
        if key.kid == current.kid:
            continue
        if key.generation > current.generation:
            following.append(key)
        elif key.activates_at > now and current.activates_at <= now:
            dead.append(key)  # superseded by a forced rotation before it ever signed
        else:
            # It stopped signing when the first newer generation became active.
            retired_at = min(
                (
                    k.activates_at
                    for k in keys
                    if k.generation > key.generation and k.activates_at <= now
                ),
                default=now,
            )
            if retired_at + retain_after_retirement <= now:
                dead.append(key)
            else:
                previous.append(key)
    return KeyStates(current, following, previous, dead)


class SigningKeyManager:
    """The shared JWT signing keys of one daemon (see the module docstring)."""

    def __init__(self, config: Config, storage: Storage, keyring: KeyRing, clock: Clock) -> None:
        self._config = config
        self._jwt = config.tokens.jwt
        self._storage = storage
        self._keyring = keyring
        self._clock = clock
        # Tokens live at most access_token_ttl; resource servers cache JWKS for a while.
        self._retain = config.tokens.access_token_ttl + self._jwt.key_overlap
        self._keys: list[SigningKeyRecord] = []
        self._private: dict[str, SigningKey] = {}
        self._refreshed_at: float | None = None
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ state
    @property
    def loaded(self) -> bool:
        return bool(self._keys)

    def states(self, now: float | None = None) -> KeyStates | None:
        return classify(self._keys, self._clock.now() if now is None else now, self._retain)

    def _new_record(self, generation: int, activates_at: float, now: float) -> SigningKeyRecord:
        key = _generate(self._jwt.alg)
        kid = str(key.kid)
        pem = key.as_pem(private=True)
        return SigningKeyRecord(
            kid=kid,
            alg=self._jwt.alg,
            generation=generation,
            private_key=self._keyring.encrypt(pem, _associated_data(kid)),
            public_jwk=dict(key.as_dict(private=False)),
            created_at=now,
            activates_at=activates_at,
        )

    # ------------------------------------------------------------------ maintenance
    async def refresh(self, now: float | None = None) -> None:
        """Read the shared set, make the rotations that are due, delete dead keys, cache."""
        async with self._lock:
            now = self._clock.now() if now is None else now
            keys = await self._storage.list_signing_keys()
            for _ in range(_MAX_ROUNDS):
                changed = await self._step(keys, now)
                if not changed:
                    break
                keys = await self._storage.list_signing_keys()
            self._cache(keys)
            self._refreshed_at = now

    async def _step(self, keys: list[SigningKeyRecord], now: float) -> bool:
        """Make at most one change to the shared set; True if one was attempted (a lost
        race counts too: the set changed under us)."""
        top = max((k.generation for k in keys), default=0)
        states = classify(keys, now, self._retain)
        if states is None:
            await self._add(self._new_record(1, now, now))
            return True
        if states.current.alg != self._jwt.alg:
            # The configured algorithm changed: a key of the new kind signs from now on.
            await self._add(self._new_record(top + 1, now, now))
            return True
        for key in states.following:
            if key.alg != self._jwt.alg:
                await self._storage.delete_signing_key(key.kid)
                return True
        if states.dead:
            for key in states.dead:
                await self._storage.delete_signing_key(key.kid)
                log.info("signing key retired", kid=key.kid, generation=key.generation)
            return True
        if not states.following:
            activates_at = max(now, states.current.activates_at + self._jwt.rotation_interval)
            await self._add(self._new_record(top + 1, activates_at, now))
            return True
        return False

    async def _add(self, record: SigningKeyRecord) -> bool:
        added = await self._storage.add_signing_key(record)
        if added:
            log.info(
                "signing key created",
                kid=record.kid,
                generation=record.generation,
                alg=record.alg,
                activates_at=record.activates_at,
            )
        return added

    def _cache(self, keys: list[SigningKeyRecord]) -> None:
        private: dict[str, SigningKey] = {}
        for record in keys:
            known = self._private.get(record.kid)
            if known is not None:
                private[record.kid] = known
                continue
            try:
                pem = self._keyring.decrypt(record.private_key, _associated_data(record.kid))
            except DecryptionError:
                # Encrypted under a key no longer in the ring: it can be published, not used.
                log.error("signing key cannot be decrypted", kid=record.kid)
                continue
            private[record.kid] = _import(record, pem)
        self._keys = list(keys)
        self._private = private

    async def rotate(self, now: float | None = None) -> SigningKeyRecord:
        """Make a new key sign from ``now`` on (the old one stays published while the
        tokens it signed live). Returns the new key's record."""
        now = self._clock.now() if now is None else now
        for _ in range(_MAX_ROUNDS):
            keys = await self._storage.list_signing_keys()
            top = max((k.generation for k in keys), default=0)
            record = self._new_record(top + 1, now, now)
            if await self._add(record):
                await self.refresh(now)
                return record
        raise StorageError("could not add a signing key: the key set keeps changing")

    async def run_forever(
        self,
        interval: float = REFRESH_INTERVAL,
        *,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        """Refresh every ``interval`` seconds until cancelled; failures are logged and the
        loop goes on (the cached keys keep signing meanwhile)."""
        while True:
            await sleep(interval)
            try:
                await self.refresh()
            except StorageError as exc:
                log.warning("signing key refresh failed", error=str(exc))
            except Exception:  # never let the key task die
                log.exception("signing key refresh crashed")

    # ------------------------------------------------------------------ use
    def sign_access_token(self, record: AccessTokenRecord, issuer: str) -> str:
        """An RFC 9068 access token for ``record`` (§2.2 claims, §2.1 ``typ``)."""
        key_record = current_key(self._keys, record.issued_at)
        key = None if key_record is None else self._private.get(key_record.kid)
        if key_record is None or key is None:
            raise TemporarilyUnavailable("the token signing keys are not loaded")
        claims: dict[str, Any] = {
            "iss": issuer,
            "sub": record.subject,
            "aud": record.resource,
            "exp": int(record.expires_at),
            "iat": int(record.issued_at),
            "nbf": int(record.issued_at),
            "jti": record.jti,
            "client_id": record.client_id,
            "scope": " ".join(record.scopes),
        }
        header = {"alg": key_record.alg, "typ": ACCESS_TOKEN_TYP, "kid": key_record.kid}
        with warnings.catch_warnings():
            # joserfc flags "EdDSA" as superseded by "Ed25519" (RFC 9864); both are offered.
            warnings.simplefilter("ignore", SecurityWarning)
            return jwt.encode(header, claims, key, algorithms=[key_record.alg])

    async def jwks(self, now: float | None = None) -> dict[str, Any]:
        """The public keys: previous, current and next (RFC 7517 §5)."""
        now = self._clock.now() if now is None else now
        stale = self._refreshed_at is None or now - self._refreshed_at >= REFRESH_INTERVAL
        states = self.states(now)
        if stale or states is None or not states.following:
            # A rotation happened since the last read (or nothing is loaded): catch up.
            await self.refresh(now)
            states = self.states(now)
        if states is None:
            return {"keys": []}
        published = [*states.previous, states.current, *states.following]
        published.sort(key=lambda k: k.generation)
        return {"keys": [dict(k.public_jwk) for k in published]}


async def rotate_signing_keys(config: Config, storage: Storage) -> SigningKeyRecord:
    """What ``mcp-oauthd keys rotate`` runs, on the configured (not yet opened) storage: a
    new key signs from now on, and every replica picks it up at its next refresh (within
    a minute); tokens signed with the old keys stay verifiable while they live."""
    if config.tokens.format != "jwt":
        raise ValueError("tokens.format is not jwt: there are no signing keys to rotate")
    if isinstance(config.storage, MemoryStorageConfig):
        raise ValueError("memory storage lives inside the server process: rotate there")
    from mcp_oauthd.security.keys import load_key_material

    await storage.open()
    try:
        keyring = load_key_material(config).keyring
        manager = SigningKeyManager(config, storage, keyring, SystemClock())
        await manager.refresh()
        return await manager.rotate()
    finally:
        await storage.close()

"""The storage contract: records and the domain operations every backend implements.

Every operation here is a *domain* operation and each is atomic by contract: a backend
must never let two callers both win ``consume_code``, both rotate one refresh token, or
store tokens under a grant that a concurrent ``revoke_grant`` has already killed.

Tokens and codes are keyed by the SHA-256 hash of their value; no backend ever sees a
plaintext token. Record kinds are kept apart (clients, codes, grants, access tokens,
refresh tokens, consents, ephemeral flow state), never one shared key namespace.

Time is always passed in (``now``, seconds since the epoch) so tests use a fake clock and
backends never read the wall clock themselves. Lookups return records whatever their
expiry; the service decides what "expired" means. ``gc(now)`` deletes what has expired.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field


class StorageError(Exception):
    """An internal storage failure. Never an OAuth error; the service translates it."""


class StorageUnavailable(StorageError):
    """The backend cannot be reached (connection refused, timeout, locked too long)."""


class GrantRevoked(StorageError):
    """Tokens were to be stored under a grant that has been revoked."""


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class ClientKind(StrEnum):
    STATIC = "static"
    DYNAMIC = "dynamic"
    CIMD = "cimd"


class ClientRecord(Record):
    client_id: str
    client_name: str | None = None
    kind: ClientKind = ClientKind.DYNAMIC
    # argon2 hash for low-entropy (configured) secrets, "sha256:<hex>" for generated ones.
    secret_hash: str | None = None
    redirect_uris: list[str] = Field(default_factory=list)
    grant_types: list[str] = Field(default_factory=lambda: ["authorization_code", "refresh_token"])
    response_types: list[str] = Field(default_factory=lambda: ["code"])
    token_endpoint_auth_method: str = "none"
    scope: str | None = None
    application_type: str = "native"
    registration_access_token_hash: str | None = None
    created_at: float = 0.0
    expires_at: float | None = None
    # Where a dynamic registration came from: an IPv4 address, or the /64 network of an
    # IPv6 one (the unit one host controls); the per-IP registration cap counts by it.
    registered_ip: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def is_public(self) -> bool:
        return self.token_endpoint_auth_method == "none"


class CodeRecord(Record):
    """Our authorization code, bound to everything the token request must repeat."""

    code_hash: str
    grant_id: str  # pre-allocated: the grant the redemption will create
    client_id: str
    redirect_uri: str
    code_challenge: str
    resource: str
    scopes: list[str]
    subject: str
    username: str | None = None
    email: str | None = None
    provider: str
    upstream: str | None = None  # encrypted upstream token set (AES-256-GCM envelope)
    upstream_expires_at: float | None = None
    issued_at: float
    expires_at: float
    consumed_at: float | None = None


class ConsumeStatus(StrEnum):
    OK = "ok"
    REUSED = "reused"
    MISSING = "missing"


class ConsumeResult(Record):
    status: ConsumeStatus
    code: CodeRecord | None = None


class GrantRecord(Record):
    grant_id: str
    subject: str
    username: str | None = None
    email: str | None = None
    client_id: str
    resource: str
    scopes: list[str]
    provider: str
    created_at: float
    expires_at: float  # absolute lifetime of the grant and its refresh family
    upstream: str | None = None
    upstream_expires_at: float | None = None
    revoked_at: float | None = None


class AccessTokenRecord(Record):
    token_hash: str
    jti: str
    grant_id: str
    client_id: str
    subject: str
    username: str | None = None
    email: str | None = None
    resource: str
    scopes: list[str]
    issued_at: float
    expires_at: float


class RefreshTokenRecord(Record):
    token_hash: str
    grant_id: str
    client_id: str
    scopes: list[str]
    issued_at: float
    expires_at: float
    rotated_at: float | None = None
    # The successor token response, encrypted under a key derived from *this* token, so
    # only its holder can read it back during the grace window (nothing stored in clear).
    successor: str | None = None


class RotateStatus(StrEnum):
    ROTATED = "rotated"
    GRACE = "grace"  # replayed within the grace window: ``successor`` is returned
    REUSED = "reused"  # replayed after the window: the grant has been revoked
    MISSING = "missing"


class RotateResult(Record):
    status: RotateStatus
    successor: str | None = None
    grant_id: str | None = None


class ConsentRecord(Record):
    subject: str
    client_id: str
    resource: str
    scopes: list[str]
    granted_at: float
    expires_at: float


class SigningKeyRecord(Record):
    """A JWT signing key, kept in storage so every replica signs with and publishes the
    same keys (DESIGN §1). Keys are ordered by ``generation``: the newest generation whose
    ``activates_at`` has passed signs; newer ones are published ahead of use ("next");
    older ones stay published while tokens they signed may live ("previous")."""

    kid: str
    alg: str
    generation: int
    private_key: str  # the private key (PEM), encrypted with the key ring; never in clear
    public_jwk: dict[str, Any]
    created_at: float
    activates_at: float


@runtime_checkable
class Storage(Protocol):
    """What every storage backend implements, built in or plugged in.

    - Every method may raise ``StorageUnavailable`` (backend unreachable, timeout, lock
      held too long): the daemon answers 503 ``temporarily_unavailable`` and retries
      nothing itself, so a backend retries only where a retry is safe (idempotent).
      Other internal failures raise ``StorageError``; nothing else is raised on purpose.
    - Each method is one atomic domain operation against concurrent callers *in every
      process and replica sharing the backend*: no caller ever sees half of one.
      Several daemons may share one store; an in-process lock is not enough there.
    - Records go in and come out as equal values (a round trip changes nothing, floats
      included); callers never share mutable state with the store.
    - ``now`` is passed in; a backend never reads the clock. Lookups return records
      whatever their expiry except where a method says otherwise.
    - ``name`` equals the config ``type``.

    ``mcp_oauthd.testing.storage_conformance.StorageConformance`` checks all of this,
    concurrency cases included; see docs/extending.md.
    """

    name: str

    async def open(self) -> None:
        """Connect, create or migrate the schema. Called once at start-up, before any
        other method; must be safe when several processes open one store at once. Raises
        ``StorageUnavailable`` (or ``StorageError`` for a store it cannot use)."""

    async def close(self) -> None:
        """Release connections. Called once at shutdown; must not raise."""

    async def ping(self) -> None:
        """Return if the backend answers; raise ``StorageUnavailable`` otherwise."""

    # ----------------------------------------------------------------- clients
    async def put_client(self, client: ClientRecord) -> None:
        """Insert or replace a client (keeping ``count_clients_by_ip`` in step)."""

    async def get_client(self, client_id: str) -> ClientRecord | None:
        """The client, or None; expired ones too (the caller checks ``expires_at``)."""

    async def delete_client(self, client_id: str) -> bool:
        """Delete a client; True if it existed. Atomically, its grants are revoked too
        (as ``revoke_grant``, with every token under them)."""

    async def list_clients(self) -> list[ClientRecord]:
        """Every stored client, ordered by ``client_id``."""

    async def count_clients_by_ip(self, ip: str, now: float) -> int:
        """How many clients with ``registered_ip == ip`` are live at ``now`` (no
        ``expires_at``, or one after ``now``). Backs the per-IP registration cap, so it
        must stay cheap (an index, not a scan) however many clients exist."""

    # ----------------------------------------------------------------- ephemeral state
    async def put_ephemeral(
        self, kind: str, key: str, data: dict[str, Any], expires_at: float
    ) -> None:
        """Store short-lived flow state under (kind, key), replacing what was there; kinds
        never share keys. ``data`` is a JSON object (anything else raises
        ``StorageError``) and comes back equal, never aliased with the caller's dict.
        Providers use this too (e.g. one-time codes of an in-process login)."""

    async def get_ephemeral(self, kind: str, key: str, now: float) -> dict[str, Any] | None:
        """Read without consuming; None when absent or expired."""

    async def take_ephemeral(self, kind: str, key: str, now: float) -> dict[str, Any] | None:
        """Atomically read and delete: of concurrent callers exactly one gets the data."""

    # ----------------------------------------------------------------- codes
    async def put_code(self, code: CodeRecord) -> None:
        """Store a new authorization code under its ``code_hash``."""

    async def consume_code(self, code_hash: str, now: float) -> ConsumeResult:
        """Atomically mark a code consumed.

        First call: ``OK`` with the record. Any later call: ``REUSED`` with the record
        (its ``grant_id`` names what the first redemption issued, so the caller can
        revoke it, RFC 9700 §4.5). Unknown code: ``MISSING``. Expired codes are returned
        as found; the caller checks ``expires_at``.
        """

    # ----------------------------------------------------------------- grants and tokens
    async def create_grant(
        self,
        grant: GrantRecord,
        access: AccessTokenRecord,
        refresh: RefreshTokenRecord | None,
    ) -> None:
        """Atomically create a grant with its first tokens.

        Raises ``GrantRevoked`` when ``grant.grant_id`` was revoked before it was created
        (a code replay raced the first redemption).
        """

    async def get_grant(self, grant_id: str) -> GrantRecord | None:
        """The grant, revoked or not (``revoked_at`` says); None if unknown or only a
        tombstone."""

    async def list_grants(
        self, subject: str | None = None, client_id: str | None = None
    ) -> list[GrantRecord]:
        """Live (unrevoked) grants, optionally filtered."""

    async def update_grant_upstream(
        self, grant_id: str, upstream: str | None, upstream_expires_at: float | None
    ) -> bool:
        """Replace the encrypted upstream token set; False if the grant is gone or revoked."""

    async def revoke_grant(self, grant_id: str, now: float) -> bool:
        """Atomically revoke a grant and delete every access and refresh token under it.

        Works for a grant id not created yet (leaves a tombstone so a later
        ``create_grant`` with that id raises ``GrantRevoked``). True if a live grant died.
        """

    async def get_access_token(self, token_hash: str) -> AccessTokenRecord | None:
        """The access token stored under this hash, or None (revoked tokens are gone).
        The hot path of introspection and ``/auth/verify``: one lookup, no scan."""

    async def get_access_token_by_jti(self, jti: str) -> AccessTokenRecord | None:
        """The access token with this ``jti`` (JWT access tokens), or None."""

    async def delete_access_token(self, token_hash: str) -> bool:
        """Delete one access token (revocation, RFC 7009); True if it existed."""

    async def get_refresh_token(self, token_hash: str) -> RefreshTokenRecord | None:
        """The refresh token stored under this hash, rotated or not, or None."""

    async def rotate_refresh_token(
        self,
        old_hash: str,
        access: AccessTokenRecord,
        refresh: RefreshTokenRecord,
        successor: str,
        now: float,
        grace: float,
    ) -> RotateResult:
        """Atomically rotate a refresh token or report its reuse.

        - live old token: mark it rotated at ``now`` with ``successor``, store the new
          access and refresh tokens -> ``ROTATED``;
        - rotated at most ``grace`` seconds ago -> ``GRACE`` with its stored successor,
          nothing new stored;
        - rotated longer ago -> revoke the whole grant (as ``revoke_grant``) -> ``REUSED``
          with ``grant_id``;
        - unknown, or its grant revoked -> ``MISSING``.
        """

    # ----------------------------------------------------------------- consent
    async def put_consent(self, consent: ConsentRecord) -> None:
        """Insert or replace the consent for (subject, client_id, resource)."""

    async def get_consent(
        self, subject: str, client_id: str, resource: str
    ) -> ConsentRecord | None:
        """The remembered consent, expired or not (the caller checks), or None."""

    # ----------------------------------------------------------------- signing keys
    async def add_signing_key(self, key: SigningKeyRecord) -> bool:
        """Atomically insert a signing key unless a key with the same ``kid`` or the same
        ``generation`` exists; True if inserted. Of concurrent adds of one generation (two
        replicas rotating at the same moment) exactly one wins."""

    async def list_signing_keys(self) -> list[SigningKeyRecord]:
        """Every signing key, lowest generation first."""

    async def delete_signing_key(self, kid: str) -> bool:
        """Delete a signing key; True if it existed. ``gc`` never touches signing keys: the
        key manager retires them."""

    # ----------------------------------------------------------------- housekeeping
    async def gc(self, now: float) -> int:
        """Delete every record whose expiry is at or before ``now`` (clients, codes,
        tokens, grants with their tokens, consents, ephemeral state, tombstones); return
        how many were deleted. Runs in the background, concurrently with everything
        else, possibly in several replicas at once; it must never delete a live record
        nor block the hot path for long (work in batches)."""


R = TypeVar("R", bound="Record")


def trusted_record(cls: type[R], fields_set: frozenset[str], values: dict[str, Any]) -> R:
    """A record of values that were validated when they were first stored (a backend's
    reads only): the attributes pydantic's ``model_construct`` sets, without its per-field
    loop or validation. ``values`` holds every field, in declaration order, with the types
    validation gives (a backend checks that before trusting a stored row)."""
    record = object.__new__(cls)
    object.__setattr__(record, "__dict__", values)
    object.__setattr__(record, "__pydantic_fields_set__", set(fields_set))
    object.__setattr__(record, "__pydantic_extra__", None)
    object.__setattr__(record, "__pydantic_private__", None)
    return record


@runtime_checkable
class CountsForGauges(Protocol):
    """An optional capability: the counts the metrics gauges show, without a record per
    grant. Counting by ``list_grants`` built every record: with 100,000 grants a recount
    stalled the event loop for 0.26 s (memory) or held the GIL for 1.3 s (SQLite,
    bench/README.md). The answers must equal what the listings give, from the same state."""

    async def count_live_grants(self, now: float) -> int:
        """How many grants are neither revoked nor expired at ``now``: the number of
        ``list_grants()`` records with ``expires_at > now``."""

    async def count_clients_by_kind(self) -> dict[ClientKind, int]:
        """How many stored clients there are of each kind (a kind with none may be left
        out): what counting ``list_clients()`` by ``kind`` gives."""


@runtime_checkable
class ReadsAccessTokensNow(Protocol):
    """An optional capability: backends that need no I/O to look up an access token (memory,
    and SQLite's event-loop reader) also answer synchronously. The introspection and
    ``/auth/verify`` hot path then runs no coroutine for its one lookup. The answer must
    be exactly ``get_access_token``'s, from the same state, at the same moment."""

    def get_access_token_now(self, token_hash: str) -> AccessTokenRecord | None:
        """``get_access_token``, synchronously."""

"""The user's upstream token set: read it, refresh it upstream ahead of expiry, store it.

Shared by the refresh grant (DESIGN §1 "upstream liveness": a user disabled at the IdP
loses MCP access within one access-token lifetime, without an IdP call on every request)
and by token exchange (an MCP server receives the user's *current* upstream token).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from mcp_oauthd.oauth.errors import InvalidGrant, TemporarilyUnavailable
from mcp_oauthd.observability.tracing import traced
from mcp_oauthd.providers.base import UpstreamError, UpstreamTokens
from mcp_oauthd.security.crypto import DecryptionError
from mcp_oauthd.storage.base import GrantRecord

if TYPE_CHECKING:
    from mcp_oauthd.service.context import Services

_UPSTREAM_AD = b"upstream"
SIGN_IN_AGAIN = "the sign-in has ended at the identity provider; the user must sign in again"


class KeyedLocks:
    """One asyncio lock per key, dropped when nobody holds or waits for it.

    Upstream refreshes of one grant are single-flight within a process: with an IdP that
    rotates refresh tokens, a second concurrent refresh would present a spent refresh
    token, get ``invalid_grant`` and wrongly end the user's grant.
    """

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


def _near_expiry(grant: GrantRecord, now: float, threshold: float) -> bool:
    return grant.upstream_expires_at is not None and grant.upstream_expires_at - now <= threshold


def _open(services: Services, grant: GrantRecord) -> UpstreamTokens:
    assert grant.upstream is not None
    try:
        return UpstreamTokens.model_validate_json(
            services.keyring.decrypt(grant.upstream, _UPSTREAM_AD)
        )
    except (DecryptionError, ValueError):
        raise TemporarilyUnavailable("stored credentials cannot be read") from None


@traced("upstream.tokens")
async def upstream_tokens(
    services: Services, grant: GrantRecord, now: float, *, need_token: bool
) -> UpstreamTokens | None:
    """The grant's upstream token set, refreshed upstream first when it expires within
    ``tokens.token_refresh_threshold``.

    Returns None when the grant holds no upstream tokens, and (with ``need_token=False``,
    the refresh grant's cheap path) when nothing had to be refreshed. A set that is near
    expiry but has no refresh token is returned as it is: the caller decides.

    Raises ``InvalidGrant`` after revoking the grant when the IdP says the upstream grant
    is dead, and ``TemporarilyUnavailable`` when the IdP cannot be reached (never lose a
    grant to a flaky upstream: the caller retries) or stored credentials cannot be read.
    """
    if grant.upstream is None:
        return None
    threshold = services.config.tokens.token_refresh_threshold
    if not _near_expiry(grant, now, threshold):
        return _open(services, grant) if need_token else None
    async with services.upstream_locks.hold(grant.grant_id):
        # Another request may have refreshed while this one waited for the lock.
        latest = await services.storage.get_grant(grant.grant_id)
        if latest is None or latest.revoked_at is not None:
            raise InvalidGrant(SIGN_IN_AGAIN)
        if latest.upstream is None:
            return None
        current = _open(services, latest)
        if not _near_expiry(latest, now, threshold) or current.refresh_token is None:
            return current
        try:
            renewed = await services.provider.refresh(current)
        except UpstreamError as exc:
            if exc.kind == "invalid_grant":
                await services.storage.revoke_grant(grant.grant_id, now)
                services.auditor.emit(
                    "grant.revoked", reason="upstream_invalid_grant", subject=grant.subject
                )
                raise InvalidGrant(SIGN_IN_AGAIN) from None
            raise TemporarilyUnavailable("the identity provider is unavailable") from None
        sealed = services.keyring.encrypt(renewed.model_dump_json().encode(), _UPSTREAM_AD)
        if not await services.storage.update_grant_upstream(
            grant.grant_id, sealed, renewed.expires_at
        ):
            # Revoked while the IdP answered: the renewed token must not be handed out.
            raise InvalidGrant(SIGN_IN_AGAIN)
        return renewed

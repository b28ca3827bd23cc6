"""The token endpoint flows and revocation: code exchange, refresh rotation, RFC 7009."""

from __future__ import annotations

import json
from collections.abc import Mapping
from json.encoder import encode_basestring_ascii as _json_str
from typing import Any

from mcp_oauthd.oauth import pkce, scopes
from mcp_oauthd.oauth.client_auth import ClientCredentials
from mcp_oauthd.oauth.errors import (
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    InvalidTarget,
    TemporarilyUnavailable,
    UnauthorizedClient,
    UnsupportedGrantType,
)
from mcp_oauthd.oauth.tokens import (
    ACCESS_PREFIX,
    REFRESH_PREFIX,
    new_token_values,
    token_hash,
)
from mcp_oauthd.observability.tracing import traced
from mcp_oauthd.security.crypto import DecryptionError, open_with_secret, seal_with_secret
from mcp_oauthd.service.context import Services
from mcp_oauthd.service.exchange import TOKEN_EXCHANGE_GRANT, TokenExchangeService
from mcp_oauthd.service.jwt import is_jwt_shaped
from mcp_oauthd.service.upstream import upstream_tokens
from mcp_oauthd.storage.base import (
    AccessTokenRecord,
    ClientRecord,
    ConsumeStatus,
    GrantRecord,
    GrantRevoked,
    RefreshTokenRecord,
    RotateStatus,
)

_SUCCESSOR_CONTEXT = b"mcp-oauthd refresh successor v1"
# The keys of a refresh grant's response (``TokenService._response`` with a refresh token).
_REFRESH_RESPONSE_KEYS = frozenset(
    ("access_token", "token_type", "expires_in", "scope", "refresh_token")
)


def _successor_plaintext(body: Mapping[str, Any], expires_at: float) -> bytes:
    """``json.dumps({**body, "expires_at": expires_at}).encode()``: what the refresh grant
    seals for its grace-window replay, read back with ``json.loads``.

    Written out for the known response (a quarter of ``json.dumps``'s cost, on every
    refresh), every string escaped by the encoder ``json.dumps`` itself uses, so the bytes
    are the same; any other shape of response goes through ``json.dumps``.
    """
    if body.keys() != _REFRESH_RESPONSE_KEYS:
        return json.dumps({**body, "expires_at": expires_at}).encode()
    return (
        f'{{"access_token": {_json_str(body["access_token"])}, '
        f'"token_type": {_json_str(body["token_type"])}, '
        f'"expires_in": {int(body["expires_in"])}, "scope": {_json_str(body["scope"])}, '
        f'"refresh_token": {_json_str(body["refresh_token"])}, '
        f'"expires_at": {float(expires_at)!r}}}'
    ).encode()


class TokenService:
    def __init__(self, services: Services) -> None:
        self.s = services
        self.exchange = TokenExchangeService(services)

    @traced("token.grant")
    async def grant(self, form: Mapping[str, str], creds: ClientCredentials) -> dict[str, Any]:
        grant_type = form.get("grant_type")
        if not grant_type:
            raise InvalidRequest("grant_type is required")
        if grant_type == TOKEN_EXCHANGE_GRANT:
            # RFC 8693: the caller is a resource server (its introspection credentials),
            # not an OAuth client, so it authenticates in the exchange service.
            return await self.exchange.exchange(form, creds)
        if grant_type not in ("authorization_code", "refresh_token"):
            raise UnsupportedGrantType("this grant type is not supported")
        client = await self.s.clients.authenticate(creds, self.s.now())
        if grant_type not in client.grant_types:
            raise UnauthorizedClient("this client may not use this grant type")
        if grant_type == "authorization_code":
            return await self.exchange_code(client, form)
        return await self.refresh(client, form)

    # ------------------------------------------------------------------ minting
    def _mint(
        self, grant: GrantRecord, token_scopes: list[str], now: float, with_refresh: bool
    ) -> tuple[str, AccessTokenRecord, str | None, RefreshTokenRecord | None]:
        tokens = self.s.config.tokens
        # Every random value of the response from one CSPRNG draw; unused ones (the opaque
        # value of a JWT response, the refresh token of a response without one) are dropped.
        jti, opaque, refresh = new_token_values()
        expires_at = min(now + tokens.access_token_ttl, grant.expires_at)

        def access_record(digest: str) -> AccessTokenRecord:
            return AccessTokenRecord(
                token_hash=digest,
                jti=jti,
                grant_id=grant.grant_id,
                client_id=grant.client_id,
                subject=grant.subject,
                username=grant.username,
                email=grant.email,
                resource=grant.resource,
                scopes=token_scopes,
                issued_at=now,
                expires_at=expires_at,
            )

        if tokens.format == "jwt":
            # RFC 9068, and still recorded by hash so revocation shows via introspection.
            if self.s.signing_keys is None:
                raise TemporarilyUnavailable("the token signing keys are not loaded")
            # The claims do not include the hash, which needs the signed value.
            access = self.s.signing_keys.sign_access_token(access_record(""), self.s.config.issuer)
        else:
            access = opaque
        # Built once with its hash (an opaque value is known up front): one validation,
        # no model_copy.
        access_rec = access_record(token_hash(access))
        if not with_refresh:
            return access, access_rec, None, None
        refresh_record = RefreshTokenRecord(
            token_hash=token_hash(refresh),
            grant_id=grant.grant_id,
            client_id=grant.client_id,
            scopes=token_scopes,
            issued_at=now,
            expires_at=min(now + tokens.refresh_token_ttl, grant.expires_at),
        )
        return access, access_rec, refresh, refresh_record

    @staticmethod
    def _response(
        access: str, record: AccessTokenRecord, refresh: str | None, now: float
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": max(0, int(record.expires_at - now)),
            "scope": scopes.fmt(record.scopes),
        }
        if refresh is not None:
            body["refresh_token"] = refresh
        return body

    # ------------------------------------------------------------------ authorization_code
    @traced("token.exchange_code")
    async def exchange_code(self, client: ClientRecord, form: Mapping[str, str]) -> dict[str, Any]:
        code = form.get("code")
        if not code:
            raise InvalidRequest("code is required")
        now = self.s.now()
        result = await self.s.storage.consume_code(token_hash(code), now)
        if result.status is ConsumeStatus.MISSING or result.code is None:
            raise InvalidGrant("the authorization code is invalid")
        record = result.code
        if result.status is ConsumeStatus.REUSED:
            # RFC 9700 §4.5 / OAuth 2.1 §4.1.3: a second use revokes what the first issued.
            await self.s.storage.revoke_grant(record.grant_id, now)
            self.s.auditor.emit("code.reused", client_id=record.client_id)
            raise InvalidGrant("the authorization code was already used")
        # RFC 6749 §4.1.3: the code MUST have been issued to the authenticated client.
        if record.client_id != client.client_id:
            raise InvalidGrant("the authorization code was issued to another client")
        if record.expires_at <= now:
            raise InvalidGrant("the authorization code has expired")
        redirect_uri = form.get("redirect_uri")
        if redirect_uri is not None and redirect_uri != record.redirect_uri:
            raise InvalidGrant("redirect_uri does not match the authorization request")
        try:
            pkce.verify(form.get("code_verifier"), record.code_challenge)
        except InvalidGrant:
            self.s.auditor.emit("pkce.failed", client_id=client.client_id)
            raise
        resource = form.get("resource")
        if resource is not None and resource.rstrip("/") != record.resource.rstrip("/"):
            # RFC 8707 §2.2: the token request's resource must fit the grant.
            raise InvalidTarget("resource does not match the authorization request")
        grant = GrantRecord(
            grant_id=record.grant_id,
            subject=record.subject,
            username=record.username,
            email=record.email,
            client_id=record.client_id,
            resource=record.resource,
            scopes=list(record.scopes),
            provider=record.provider,
            created_at=now,
            expires_at=now + self.s.config.tokens.refresh_family_lifetime,
            upstream=record.upstream,
            upstream_expires_at=record.upstream_expires_at,
        )
        with_refresh = "refresh_token" in client.grant_types
        access, access_rec, refresh, refresh_rec = self._mint(
            grant, list(record.scopes), now, with_refresh
        )
        try:
            await self.s.storage.create_grant(grant, access_rec, refresh_rec)
        except GrantRevoked:
            # A replay of this code won the race and revoked the grant first.
            raise InvalidGrant("the authorization code was already used") from None
        self.s.auditor.emit(
            "token.issued", client_id=client.client_id, subject=grant.subject, grant="code"
        )
        return self._response(access, access_rec, refresh, now)

    # ------------------------------------------------------------------ refresh_token
    @traced("token.refresh")
    async def refresh(self, client: ClientRecord, form: Mapping[str, str]) -> dict[str, Any]:
        presented = form.get("refresh_token")
        if not presented:
            raise InvalidRequest("refresh_token is required")
        if not presented.startswith(REFRESH_PREFIX):
            raise InvalidGrant("the refresh token is invalid")
        now = self.s.now()
        old_hash = token_hash(presented)
        old = await self.s.storage.get_refresh_token(old_hash)
        if old is None:
            raise InvalidGrant("the refresh token is invalid")
        # OAuth 2.1 §4.3.1: the refresh token is bound to the client it was issued to.
        if old.client_id != client.client_id:
            raise InvalidGrant("the refresh token was issued to another client")
        if old.rotated_at is None and old.expires_at <= now:
            raise InvalidGrant("the refresh token has expired")
        grant = await self.s.storage.get_grant(old.grant_id)
        if grant is None or grant.revoked_at is not None or grant.expires_at <= now:
            raise InvalidGrant("the grant has ended; sign in again")
        resource = form.get("resource")
        if resource is not None and resource.rstrip("/") != grant.resource.rstrip("/"):
            raise InvalidTarget("resource does not match the grant")
        requested = scopes.parse(form.get("scope"))
        if requested and not set(requested) <= set(old.scopes):
            # RFC 6749 §6: the scope may only narrow.
            raise InvalidScope("the requested scope exceeds the original grant")
        token_scopes = requested or list(old.scopes)
        if old.rotated_at is None:
            # DESIGN §1 upstream liveness: refresh upstream first when near expiry; a dead
            # upstream grant ends ours (InvalidGrant, grant revoked).
            await upstream_tokens(self.s, grant, now, need_token=False)
        access, access_rec, refresh, refresh_rec = self._mint(grant, token_scopes, now, True)
        assert refresh is not None
        assert refresh_rec is not None
        body = self._response(access, access_rec, refresh, now)
        successor = seal_with_secret(
            presented, _successor_plaintext(body, access_rec.expires_at), _SUCCESSOR_CONTEXT
        )
        result = await self.s.storage.rotate_refresh_token(
            old_hash,
            access_rec,
            refresh_rec,
            successor,
            now,
            self.s.config.tokens.refresh_grace_period,
        )
        if result.status is RotateStatus.ROTATED:
            self.s.auditor.emit("token.refreshed", client_id=client.client_id)
            return body
        if result.status is RotateStatus.GRACE and result.successor:
            # A concurrent refresh by another process sharing the credential: hand back
            # the successor already issued rather than failing or forking the family.
            try:
                previous = json.loads(
                    open_with_secret(presented, result.successor, _SUCCESSOR_CONTEXT)
                )
            except (DecryptionError, ValueError):
                raise InvalidGrant("the refresh token is invalid") from None
            expires_at = float(previous.pop("expires_at"))
            previous["expires_in"] = max(0, int(expires_at - now))
            self.s.auditor.emit("token.refresh_grace", client_id=client.client_id)
            return dict(previous)
        if result.status is RotateStatus.REUSED:
            self.s.auditor.emit("refresh.reused", client_id=client.client_id, subject=grant.subject)
            raise InvalidGrant("the refresh token was already used; the grant is revoked")
        raise InvalidGrant("the refresh token is invalid")

    # ------------------------------------------------------------------ revocation
    @traced("token.revoke")
    async def revoke(self, form: Mapping[str, str], creds: ClientCredentials) -> None:
        """RFC 7009 §2.1/§2.2: unknown tokens are a success; only the owner may revoke."""
        token = form.get("token")
        if not token:
            raise InvalidRequest("token is required")
        client = await self.s.clients.authenticate(creds, self.s.now())
        now = self.s.now()
        digest = token_hash(token)
        if token.startswith(ACCESS_PREFIX) or is_jwt_shaped(token):
            access = await self.s.storage.get_access_token(digest)
            if access is None:
                return
            if access.client_id != client.client_id:
                raise UnauthorizedClient("the token was issued to another client")
            await self.s.storage.delete_access_token(digest)
            self.s.auditor.emit("token.revoked", client_id=client.client_id, kind="access")
            return
        if token.startswith(REFRESH_PREFIX):
            refresh = await self.s.storage.get_refresh_token(digest)
            if refresh is None:
                return
            if refresh.client_id != client.client_id:
                raise UnauthorizedClient("the token was issued to another client")
            # Revoking a refresh token ends its grant and every token under it.
            await self.s.storage.revoke_grant(refresh.grant_id, now)
            self.s.auditor.emit("token.revoked", client_id=client.client_id, kind="refresh")

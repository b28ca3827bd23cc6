"""RFC 8693 token exchange: an MCP server obtains the user's upstream access token.

An MCP server that must call the upstream API on the user's behalf (Gmail, GitHub, ...)
presents the user's mcp-oauthd access token as ``subject_token`` and authenticates as
itself with its introspection credentials. It receives the user's *current* upstream
access token, refreshed upstream first when it is within ``token_refresh_threshold`` of
expiry (DESIGN §1). Only resources with ``allow_upstream_token`` may do this, and only
with a token whose audience is their own resource: an MCP server can never obtain the
upstream token of a user who did not sign in to *it*.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mcp_oauthd.oauth.client_auth import ClientCredentials
from mcp_oauthd.oauth.errors import (
    InvalidClient,
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    InvalidTarget,
    UnauthorizedClient,
)
from mcp_oauthd.observability.tracing import traced
from mcp_oauthd.service.context import Services
from mcp_oauthd.service.introspect import BASIC_CHALLENGE, ResourceServers, find_access_token
from mcp_oauthd.service.upstream import SIGN_IN_AGAIN, upstream_tokens

TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"

_INVALID_SUBJECT = "subject_token is not an active access token for this resource"


class TokenExchangeService:
    def __init__(self, services: Services) -> None:
        self.s = services
        self.resource_servers = ResourceServers(services.config)

    @traced("token.token_exchange")
    async def exchange(self, form: Mapping[str, str], creds: ClientCredentials) -> dict[str, Any]:
        try:
            resource = self.resource_servers.authenticate(creds)
        except InvalidClient:
            self.s.auditor.emit("token_exchange.refused", client_id=creds.client_id)
            raise InvalidClient(
                "token exchange is for resource servers: authenticate with the "
                "resource's introspection credentials",
                www_authenticate=BASIC_CHALLENGE,
            ) from None
        if not resource.allow_upstream_token:
            raise UnauthorizedClient(
                "this resource server may not obtain upstream tokens (allow_upstream_token)"
            )
        subject_token = form.get("subject_token")
        if not subject_token:
            raise InvalidRequest("subject_token is required")
        # RFC 8693 §2.1: subject_token_type is REQUIRED; we accept our access tokens.
        if form.get("subject_token_type") != ACCESS_TOKEN_TYPE:
            raise InvalidRequest(f"subject_token_type must be {ACCESS_TOKEN_TYPE}")
        requested = form.get("requested_token_type")
        if requested is not None and requested != ACCESS_TOKEN_TYPE:
            raise InvalidRequest(f"only {ACCESS_TOKEN_TYPE} can be issued")
        if form.get("actor_token") or form.get("actor_token_type"):
            raise InvalidRequest("delegation with actor_token is not supported")
        if form.get("resource") or form.get("audience"):
            # RFC 8693 §2.2.2: the one token on offer is the user's upstream token.
            raise InvalidTarget("only the user's upstream token is issued; omit resource")
        if form.get("scope"):
            raise InvalidScope("the upstream token's scope cannot be changed; omit scope")

        now = self.s.now()
        record = await find_access_token(self.s, subject_token, resource, now)
        if record is None:
            # RFC 8693 §2.2.2: an invalid subject_token is invalid_request.
            raise InvalidRequest(_INVALID_SUBJECT)
        grant = await self.s.storage.get_grant(record.grant_id)
        if grant is None or grant.revoked_at is not None or grant.expires_at <= now:
            raise InvalidRequest(_INVALID_SUBJECT)
        # The built-in local provider's "upstream token" opens no API: nothing to hand out.
        tokens = (
            None
            if grant.provider == "local"
            else await upstream_tokens(self.s, grant, now, need_token=True)
        )
        if tokens is None:
            raise InvalidRequest("this sign-in holds no upstream token (the provider issues none)")
        if tokens.expires_at is not None and tokens.expires_at <= now:
            # Expired and the IdP gave no refresh token: only a new sign-in helps.
            raise InvalidGrant(SIGN_IN_AGAIN)
        self.s.auditor.emit(
            "token.exchanged",
            resource=resource.uri,
            client_id=record.client_id,
            subject=record.subject,
        )
        token_type = tokens.token_type or "Bearer"
        body: dict[str, Any] = {
            "access_token": tokens.access_token,
            # RFC 8693 §2.2.1: issued_token_type is REQUIRED.
            "issued_token_type": ACCESS_TOKEN_TYPE,
            "token_type": "Bearer" if token_type.lower() == "bearer" else token_type,
        }
        if tokens.expires_at is not None:
            body["expires_in"] = max(0, int(tokens.expires_at - now))
        if tokens.scope:
            body["scope"] = tokens.scope
        return body

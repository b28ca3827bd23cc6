"""The browser leg: authorize -> consent -> upstream login -> callback -> our code.

Two legs, two PKCEs, two states (DESIGN §1). The client's state/PKCE/resource stay in
our flow record; the upstream sees only our own random state, PKCE pair and nonce.
Each step takes its record once (single use) and writes the next step's record.

Errors before the client and its redirect URI are trusted raise ``PageError`` (an HTML
page, never a redirect: RFC 6749 §4.1.2.1, RFC 9700 §4.1); after, they become a redirect
to the client with ``error``, ``state`` and ``iss`` (RFC 9207).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from mcp_oauthd.config.models import ResourceConfig
from mcp_oauthd.oauth import pkce, redirects, scopes
from mcp_oauthd.oauth.errors import (
    AccessDenied,
    InvalidRequest,
    InvalidTarget,
    OAuthError,
    ServerError,
    TemporarilyUnavailable,
    UnauthorizedClient,
    UnsupportedResponseType,
)
from mcp_oauthd.oauth.metadata import CALLBACK_PATH, endpoint
from mcp_oauthd.oauth.responses import authorization_response, error_response
from mcp_oauthd.oauth.tokens import new_code, new_id, token_hash
from mcp_oauthd.observability.tracing import traced
from mcp_oauthd.providers.base import Identity, UpstreamError, UpstreamTokens
from mcp_oauthd.security.crypto import constant_time_equals, random_token, sha256_hex
from mcp_oauthd.service.context import Services
from mcp_oauthd.service.policy import is_allowed
from mcp_oauthd.storage.base import ClientRecord, CodeRecord, ConsentRecord

FLOW_KIND = "authz"  # waiting for consent
UPSTREAM_KIND = "upstream"  # waiting for the upstream callback
_MAX_PARAM = 4096


class PageError(Exception):
    """An error shown as an HTML page: we cannot trust where to redirect."""

    def __init__(self, title: str, message: str, status: int = 400) -> None:
        super().__init__(title)
        self.title = title
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Redirect:
    location: str
    subject: str | None = None  # set when a login finished: the browser may remember it


@dataclass(frozen=True)
class Page:
    template: str
    context: dict[str, Any] = field(default_factory=dict)
    status: int = 200


Outcome = Redirect | Page


@dataclass(frozen=True)
class AuthorizationRequest:
    client: ClientRecord
    redirect_uri: str
    state: str | None
    code_challenge: str
    scopes: list[str]
    resource: ResourceConfig


class AuthorizeService:
    def __init__(self, services: Services) -> None:
        self.s = services
        self.callback_url = endpoint(services.config.issuer, CALLBACK_PATH)

    # ------------------------------------------------------------------ helpers
    def _error_redirect(self, redirect_uri: str, error: OAuthError, state: str | None) -> Redirect:
        return Redirect(error_response(redirect_uri, error, state, self.s.config.issuer))

    def _flow_error(self, flow: Mapping[str, Any], error: OAuthError) -> Redirect:
        return self._error_redirect(flow["redirect_uri"], error, flow.get("state"))

    def _bound(self, flow: Mapping[str, Any], browser: str | None) -> bool:
        return browser is not None and constant_time_equals(flow["browser"], sha256_hex(browser))

    # ------------------------------------------------------------------ step 1: authorize
    @traced("authorize.validate")
    async def validate(self, params: Mapping[str, str]) -> AuthorizationRequest:
        """Validate an authorization request. Raises ``PageError`` before the redirect
        URI is trusted, ``RedirectableError`` after."""
        for key, value in params.items():
            if len(value) > _MAX_PARAM:
                raise PageError("Invalid request", f"The parameter {key} is too long.")
        client_id = params.get("client_id")
        if not client_id:
            raise PageError("Invalid request", "The request has no client_id.")
        client = await self.s.clients.get(client_id)
        if client is None:
            raise PageError("Unknown application", "This application is not registered here.")
        redirect_uri = params.get("redirect_uri")
        if redirect_uri is None:
            # RFC 6749 §3.1.2.3: may be omitted only when exactly one URI is registered.
            if len(client.redirect_uris) != 1 or redirects.is_loopback_uri(client.redirect_uris[0]):
                raise PageError("Invalid request", "The request has no redirect_uri.")
            redirect_uri = client.redirect_uris[0]
        if not redirects.match_any(redirect_uri, client.redirect_uris):
            # RFC 9700 §4.1: never redirect to an unregistered URI.
            raise PageError(
                "Invalid redirect",
                "The redirect address does not match any address registered for this "
                "application, so we will not send you there.",
            )
        state = params.get("state")
        try:
            return self._validate_trusted(client, redirect_uri, state, params)
        except OAuthError as exc:
            raise RedirectableError(self._error_redirect(redirect_uri, exc, state)) from None

    def _validate_trusted(
        self,
        client: ClientRecord,
        redirect_uri: str,
        state: str | None,
        params: Mapping[str, str],
    ) -> AuthorizationRequest:
        response_type = params.get("response_type")
        if response_type != "code":
            raise UnsupportedResponseType("response_type must be code")
        if "code" not in client.response_types:
            raise UnauthorizedClient("this client may not use the code flow")
        if params.get("request") or params.get("request_uri"):
            raise InvalidRequest("request objects are not supported")
        challenge = pkce.validate_challenge(
            params.get("code_challenge"), params.get("code_challenge_method")
        )
        resource = self.resolve_resource(params.get("resource"), client)
        allowed = set(resource.scopes)
        client_scopes = client.metadata.get("scopes")
        if client.scope is not None:
            allowed &= set(client.scope.split())
        elif isinstance(client_scopes, list):
            allowed &= set(client_scopes)
        requested = scopes.parse(params.get("scope"))
        granted = scopes.resolve(
            requested,
            allowed=[s for s in resource.scopes if s in allowed],
            default=resource.effective_default_scopes,
        )
        return AuthorizationRequest(client, redirect_uri, state, challenge, granted, resource)

    def resolve_resource(self, value: str | None, client: ClientRecord) -> ResourceConfig:
        """RFC 8707 §2: the default resource when omitted, invalid_target when unknown."""
        if value is None:
            resource = self.s.config.default_resource
        else:
            found = self.s.config.resource(value) or self.s.config.resource(value.rstrip("/"))
            if found is None:
                raise InvalidTarget("the requested resource is not known to this server")
            resource = found
        allowed = client.metadata.get("resources")
        if isinstance(allowed, list) and resource.uri not in allowed:
            raise InvalidTarget("this client may not request tokens for that resource")
        return resource

    @traced("authorize.start")
    async def start(
        self, request: AuthorizationRequest, browser: str, remembered_subject: str | None
    ) -> Outcome:
        """Create the flow and decide: consent page, or straight upstream."""
        now = self.s.now()
        flow: dict[str, Any] = {
            "client_id": request.client.client_id,
            "redirect_uri": request.redirect_uri,
            "state": request.state,
            "code_challenge": request.code_challenge,
            "scopes": request.scopes,
            "resource": request.resource.uri,
            "browser": sha256_hex(browser),
            "created_at": now,
            "approved": False,
            "remember": False,
            "expected_subject": None,
        }
        self.s.auditor.emit(
            "authorization.started", client_id=request.client.client_id, resource=flow["resource"]
        )
        consent = self.s.config.consent
        if not consent.enabled:
            flow["approved"] = True
            return await self._go_upstream(flow)
        if consent.remember and remembered_subject:
            record = await self.s.storage.get_consent(
                remembered_subject, request.client.client_id, request.resource.uri
            )
            if (
                record is not None
                and record.expires_at > now
                and set(request.scopes) <= set(record.scopes)
            ):
                flow["approved"] = True
                flow["expected_subject"] = remembered_subject
                return await self._go_upstream(flow)
        flow_id = random_token(32)
        await self.s.storage.put_ephemeral(
            FLOW_KIND, flow_id, flow, now + self.s.config.tokens.flow_ttl
        )
        return Page("consent", await self.consent_context(flow_id, flow, browser))

    # ------------------------------------------------------------------ step 2: consent
    def csrf_token(self, flow_id: str, browser: str) -> str:
        return self.s.signer.mac("consent-csrf", f"{flow_id}:{browser}")

    async def consent_context(
        self, flow_id: str, flow: Mapping[str, Any], browser: str
    ) -> dict[str, Any]:
        client = await self.s.clients.get(flow["client_id"])
        resource = self.s.config.resource(flow["resource"])
        target = urlsplit(flow["redirect_uri"])
        # An app's private-use scheme says more than its "host" (cursor://anysphere...).
        redirect_host = (
            target.hostname or ""
            if target.scheme in ("http", "https")
            else f"{target.scheme}://{target.netloc}"
        )
        return {
            "flow_id": flow_id,
            "csrf_token": self.csrf_token(flow_id, browser),
            "client_name": (client.client_name if client else None) or flow["client_id"],
            "client_id": flow["client_id"],
            "client_kind": client.kind.value if client else "unknown",
            "client_host": urlsplit(flow["client_id"]).hostname
            if flow["client_id"].startswith("https://")
            else None,
            "redirect_uri": flow["redirect_uri"],
            "redirect_host": redirect_host,
            "localhost_only": all(
                redirects.is_loopback_uri(u) for u in (client.redirect_uris if client else [])
            ),
            "scopes": flow["scopes"],
            "resource": flow["resource"],
            "resource_name": resource.name if resource and resource.name else flow["resource"],
            "identity": flow.get("identity"),
            "remember_available": self.s.config.consent.remember,
        }

    async def show_consent(self, flow_id: str | None, browser: str | None) -> Page:
        if not flow_id:
            raise PageError("Invalid request", "This consent link is incomplete.")
        flow = await self.s.storage.get_ephemeral(FLOW_KIND, flow_id, self.s.now())
        if flow is None:
            raise _expired()
        if not self._bound(flow, browser):
            raise _wrong_browser()
        assert browser is not None
        return Page("consent", await self.consent_context(flow_id, flow, browser))

    @traced("consent.decide")
    async def decide(
        self,
        flow_id: str | None,
        csrf: str | None,
        decision: str | None,
        remember: bool,
        browser: str | None,
    ) -> Outcome:
        if not flow_id or not csrf or browser is None:
            raise PageError("Invalid request", "This consent form is incomplete.")
        # CSRF (MCP security best practices): the token is bound to flow and browser.
        if not self.s.signer.verify("consent-csrf", f"{flow_id}:{browser}", csrf):
            raise PageError("Invalid request", "This consent form is not valid any more.", 403)
        flow = await self.s.storage.take_ephemeral(FLOW_KIND, flow_id, self.s.now())
        if flow is None:
            raise _expired()
        if not self._bound(flow, browser):
            raise _wrong_browser()
        if decision != "approve":
            self.s.auditor.emit("consent.denied", client_id=flow["client_id"])
            return self._flow_error(flow, AccessDenied("the user denied the request"))
        flow["approved"] = True
        flow["remember"] = remember and self.s.config.consent.remember
        self.s.auditor.emit("consent.granted", client_id=flow["client_id"])
        if flow.get("identity"):
            # Consent given after login (remembered consent belonged to someone else).
            return await self._finish(flow, Identity(**flow["identity"]), flow.get("upstream"))
        return await self._go_upstream(flow)

    # ------------------------------------------------------------------ step 3: upstream
    @traced("authorize.redirect_upstream")
    async def _go_upstream(self, flow: dict[str, Any]) -> Outcome:
        now = self.s.now()
        verifier, challenge = pkce.new_pair()
        upstream_state = random_token(32)
        nonce = random_token(24)
        record = dict(flow, upstream_verifier=verifier, nonce=nonce)
        await self.s.storage.put_ephemeral(
            UPSTREAM_KIND, upstream_state, record, now + self.s.config.tokens.flow_ttl
        )
        try:
            url = await self.s.provider.authorization_url(
                redirect_uri=self.callback_url,
                state=upstream_state,
                code_challenge=challenge,
                nonce=nonce,
            )
        except UpstreamError as exc:
            await self.s.storage.take_ephemeral(UPSTREAM_KIND, upstream_state, now)
            return self._flow_error(flow, _map_upstream(exc))
        return Redirect(url)

    # ------------------------------------------------------------------ step 4: callback
    @traced("callback.complete")
    async def callback(self, params: Mapping[str, str], browser: str | None) -> Outcome:
        state = params.get("state")
        if not state:
            raise PageError("Invalid request", "The sign-in response has no state.")
        flow = await self.s.storage.take_ephemeral(UPSTREAM_KIND, state, self.s.now())
        if flow is None:
            raise _expired()
        if not self._bound(flow, browser):
            # Login CSRF / session fixation: this sign-in was started in another browser.
            self.s.auditor.emit("callback.browser_mismatch", client_id=flow["client_id"])
            raise _wrong_browser()
        if params.get("error"):
            err: OAuthError
            if params["error"] == "access_denied":
                err = AccessDenied("the user or the identity provider denied the request")
            elif params["error"] == "temporarily_unavailable":
                err = TemporarilyUnavailable("the identity provider is unavailable")
            else:
                err = ServerError("the identity provider returned an error")
            self.s.auditor.emit(
                "login.upstream_error", client_id=flow["client_id"], error=err.error
            )
            return self._flow_error(flow, err)
        code = params.get("code")
        if not code:
            return self._flow_error(flow, ServerError("the identity provider returned no code"))
        try:
            identity, upstream = await self.s.provider.exchange(
                code=code,
                redirect_uri=self.callback_url,
                code_verifier=flow["upstream_verifier"],
                nonce=flow["nonce"],
                state=state,
            )
        except UpstreamError as exc:
            self.s.auditor.emit("login.upstream_error", client_id=flow["client_id"], error=exc.kind)
            return self._flow_error(flow, _map_upstream(exc))
        if not is_allowed(self.s.config.access_policy, identity):
            self.s.auditor.emit(
                "login.refused", client_id=flow["client_id"], subject=identity.subject
            )
            back = error_response(
                flow["redirect_uri"],
                AccessDenied("the user is not allowed to use this server"),
                flow.get("state"),
                self.s.config.issuer,
            )
            return Page(
                "refused",
                {"email": identity.email or identity.username or "", "return_url": back},
                status=403,
            )
        sealed = self.seal_upstream(upstream)
        expected = flow.get("expected_subject")
        if expected and expected != identity.subject:
            # Consent was remembered for another user: ask this one.
            flow_id = random_token(32)
            flow = dict(flow, identity=identity.model_dump(), upstream=sealed, approved=False)
            flow["upstream_expires_at"] = upstream.expires_at
            await self.s.storage.put_ephemeral(
                FLOW_KIND, flow_id, flow, self.s.now() + self.s.config.tokens.flow_ttl
            )
            assert browser is not None
            return Page("consent", await self.consent_context(flow_id, flow, browser))
        flow["upstream_expires_at"] = upstream.expires_at
        return await self._finish(flow, identity, sealed)

    def seal_upstream(self, upstream: UpstreamTokens) -> str:
        return self.s.keyring.encrypt(upstream.model_dump_json().encode(), b"upstream")

    @traced("callback.issue_code")
    async def _finish(
        self, flow: Mapping[str, Any], identity: Identity, sealed: str | None
    ) -> Redirect:
        """Mint our code (single use, bound to everything) and send it to the client."""
        now = self.s.now()
        code = new_code()
        record = CodeRecord(
            code_hash=token_hash(code),
            grant_id=new_id(),
            client_id=flow["client_id"],
            redirect_uri=flow["redirect_uri"],
            code_challenge=flow["code_challenge"],
            resource=flow["resource"],
            scopes=list(flow["scopes"]),
            subject=identity.subject,
            username=identity.username,
            email=identity.email,
            provider=self.s.provider.name,
            upstream=sealed,
            upstream_expires_at=flow.get("upstream_expires_at"),
            issued_at=now,
            expires_at=now + self.s.config.tokens.code_ttl,
        )
        await self.s.storage.put_code(record)
        if flow.get("remember"):
            await self.s.storage.put_consent(
                ConsentRecord(
                    subject=identity.subject,
                    client_id=flow["client_id"],
                    resource=flow["resource"],
                    scopes=list(flow["scopes"]),
                    granted_at=now,
                    expires_at=now + self.s.config.consent.remember_ttl,
                )
            )
        self.s.auditor.emit(
            "login.succeeded", client_id=flow["client_id"], subject=identity.subject
        )
        location = authorization_response(
            flow["redirect_uri"],
            {"code": code, "state": flow.get("state"), "iss": self.s.config.issuer},
        )
        return Redirect(location, subject=identity.subject)


class RedirectableError(Exception):
    """An authorization error that may be sent back to the (trusted) redirect URI."""

    def __init__(self, redirect: Redirect) -> None:
        super().__init__("redirectable authorization error")
        self.redirect = redirect


def _expired() -> PageError:
    return PageError(
        "This sign-in has expired",
        "This sign-in link has expired or was already used. Go back to the application "
        "and start again.",
    )


def _wrong_browser() -> PageError:
    return PageError(
        "Sign-in started elsewhere",
        "This sign-in was started in another browser or the browser's cookies were cleared. "
        "Go back to the application and start again.",
        403,
    )


def _map_upstream(exc: UpstreamError) -> OAuthError:
    if exc.kind == "access_denied":
        return AccessDenied("the identity provider denied the request")
    if exc.kind == "unavailable":
        return TemporarilyUnavailable("the identity provider is unavailable; try again")
    return ServerError("the identity provider sign-in failed")

"""Any OpenID Connect identity provider, found by discovery (Okta, Entra ID, Auth0, Keycloak,
Dex, Google, ...).

What is checked, and why:

- the discovery document's ``issuer`` equals the configured one byte for byte (OIDC
  Discovery §4.3), and every endpoint it names is https;
- the ID token is signed with an asymmetric algorithm (never ``none`` nor ``HS*``: an
  attacker who knows the client secret, or nobody at all, must not be able to mint one)
  by a key of the IdP's JWKS; an unknown ``kid`` triggers one JWKS re-fetch (key
  rollover), rate-limited so garbage ``kid``s cannot make us hammer the IdP;
- ``iss``, ``aud`` (contains our client id), ``azp`` (equals our client id when there are
  several audiences or when present), ``nonce``, ``exp``/``iat``/``nbf`` with the
  configured clock skew, all against the injected clock.

The MCP client's request never reaches the IdP: only our own state, nonce and PKCE go up.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import re
from dataclasses import dataclass
from typing import Any, TypeGuard

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from yarl import URL

from mcp_oauthd.clock import Clock
from mcp_oauthd.config.models import OidcProviderConfig
from mcp_oauthd.plugins import ProviderPlugin
from mcp_oauthd.providers._http import (
    HttpClient,
    SessionFactory,
    basic_auth_header,
    check_upstream_url,
)
from mcp_oauthd.providers.base import Identity, UpstreamError, UpstreamTokens

ASYMMETRIC_ALGS: tuple[str, ...] = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
)
_KTY_FOR_ALG_PREFIX = {"RS": "RSA", "PS": "RSA", "ES": "EC"}
_CRV_FOR_ALG = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
_ERROR_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class OidcMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None
    token_endpoint_auth_methods: tuple[str, ...]
    id_token_algs: tuple[str, ...]
    fetched_at: float


def _b64url_json(part: str) -> Any:
    try:
        return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except ValueError:
        return None


def _jwt_payload(token: str) -> Any:
    """The unverified payload of a compact JWT we verified earlier (or None)."""
    parts = token.split(".")
    return _b64url_json(parts[1]) if len(parts) == 3 else None


def _safe_code(value: Any) -> str:
    """An upstream ``error`` code, fit for a log line (it is attacker-influenced text)."""
    if isinstance(value, str) and _ERROR_CODE.match(value):
        return value
    return "unrecognised"


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def token_error(provider: str, what: str, status: int, body: Any) -> UpstreamError:
    """Map an OAuth error answer (RFC 6749 §5.2) of a token endpoint to ``UpstreamError``."""
    code = body.get("error") if isinstance(body, dict) else None
    if code == "invalid_grant":
        return UpstreamError("invalid_grant", f"{provider}: {what} says invalid_grant")
    if code == "access_denied":
        return UpstreamError("access_denied", f"{provider}: {what} says access_denied")
    if code in ("temporarily_unavailable", "slow_down"):
        return UpstreamError("unavailable", f"{provider}: {what} says {code}")
    return UpstreamError(
        "server_error", f"{provider}: {what} failed (HTTP {status}, error={_safe_code(code)})"
    )


def expires_at_from(body: dict[str, Any], now: float) -> float | None:
    value = body.get("expires_in")
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if _is_number(value) and value > 0:
        return now + float(value)
    return None


class OidcProvider:
    """An OpenID Connect relying party for one configured IdP.

    ``session_factory`` lets tests or the app supply the ``aiohttp.ClientSession`` (the
    provider still owns and closes it). ``use_userinfo`` merges the userinfo endpoint's
    claims under the ID token's (the ID token wins where both speak).
    """

    name = "oidc"
    subject_prefix = "oidc"

    def __init__(
        self,
        config: OidcProviderConfig,
        clock: Clock,
        session_factory: SessionFactory | None = None,
        *,
        use_userinfo: bool = True,
        jwks_refetch_interval: float = 60.0,
        jwks_max_age: float = 3600.0,
        discovery_max_age: float = 86400.0,
    ) -> None:
        check_upstream_url(
            config.issuer, allow_insecure_http=config.allow_insecure_http, what="the OIDC issuer"
        )
        self.config = config
        self._clock = clock
        self._http = HttpClient(
            provider=self.name, timeout=config.timeout, session_factory=session_factory
        )
        self._use_userinfo = use_userinfo
        self._jwks_refetch_interval = jwks_refetch_interval
        self._jwks_max_age = jwks_max_age
        self._discovery_max_age = discovery_max_age
        self._metadata: OidcMetadata | None = None
        self._metadata_lock = asyncio.Lock()
        self._jwks: KeySet | None = None
        self._jwks_fetched_at = 0.0
        self._jwks_generation = 0
        self._jwks_last_forced: float | None = None
        self._jwks_lock = asyncio.Lock()

    # ------------------------------------------------------------------ hooks for presets
    def accepted_issuers(self) -> tuple[str, ...]:
        """The ``iss`` values an ID token may carry (Google also uses a scheme-less one)."""
        return (self.config.issuer,)

    def authorize_params(self) -> dict[str, str]:
        """Extra authorization parameters; never override the core ones."""
        return dict(self.config.extra_authorize_params)

    def check_claims(self, claims: dict[str, Any]) -> None:
        """Provider-specific checks of verified ID token claims; raise ``UpstreamError``."""

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        await self.metadata()
        await self._ensure_jwks()

    async def close(self) -> None:
        await self._http.close()

    # ------------------------------------------------------------------ discovery
    async def metadata(self) -> OidcMetadata:
        current = self._metadata
        if current is not None and self._clock.now() - current.fetched_at < self._discovery_max_age:
            return current
        async with self._metadata_lock:
            current = self._metadata
            now = self._clock.now()
            if current is not None and now - current.fetched_at < self._discovery_max_age:
                return current
            try:
                self._metadata = await self._fetch_metadata(now)
            except UpstreamError:
                if current is None:
                    raise
                # Keep serving from the stale document while the IdP is unreachable.
                self._metadata = OidcMetadata(**{**current.__dict__, "fetched_at": now})
            return self._metadata

    async def _fetch_metadata(self, now: float) -> OidcMetadata:
        issuer = self.config.issuer
        url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        status, doc = await self._http.request_json("GET", url, what="discovery")
        if status != 200 or not isinstance(doc, dict):
            raise UpstreamError("server_error", f"{self.name}: discovery answered HTTP {status}")
        if doc.get("issuer") != issuer:
            raise UpstreamError(
                "server_error",
                f"{self.name}: discovery issuer does not equal the configured issuer",
            )
        endpoints: dict[str, str] = {}
        for field in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            value = doc.get(field)
            if not isinstance(value, str):
                raise UpstreamError("server_error", f"{self.name}: discovery lacks {field}")
            endpoints[field] = value
        userinfo = doc.get("userinfo_endpoint")
        userinfo = userinfo if isinstance(userinfo, str) else None
        for field, value in [*endpoints.items(), ("userinfo_endpoint", userinfo)]:
            if value is None:
                continue
            try:
                check_upstream_url(
                    value, allow_insecure_http=self.config.allow_insecure_http, what=field
                )
            except ValueError:
                raise UpstreamError(
                    "server_error", f"{self.name}: discovery {field} is not https"
                ) from None
        methods = doc.get("token_endpoint_auth_methods_supported")
        auth_methods = (
            tuple(m for m in methods if isinstance(m, str))
            if isinstance(methods, list)
            else ("client_secret_basic",)  # the OIDC Discovery default
        )
        algs = doc.get("id_token_signing_alg_values_supported")
        id_token_algs = (
            tuple(a for a in ASYMMETRIC_ALGS if a in algs)
            if isinstance(algs, list)
            else ASYMMETRIC_ALGS
        )
        return OidcMetadata(
            issuer=issuer,
            authorization_endpoint=endpoints["authorization_endpoint"],
            token_endpoint=endpoints["token_endpoint"],
            jwks_uri=endpoints["jwks_uri"],
            userinfo_endpoint=userinfo,
            token_endpoint_auth_methods=auth_methods,
            id_token_algs=id_token_algs,
            fetched_at=now,
        )

    # ------------------------------------------------------------------ JWKS
    async def _fetch_jwks(self) -> None:
        """Fetch the JWKS; the caller holds ``_jwks_lock``."""
        meta = await self.metadata()
        status, doc = await self._http.request_json("GET", meta.jwks_uri, what="JWKS")
        if status != 200 or not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            raise UpstreamError("server_error", f"{self.name}: JWKS answered HTTP {status}")
        signing = [
            k
            for k in doc["keys"]
            if isinstance(k, dict) and k.get("use", "sig") == "sig" and k.get("kty") != "oct"
        ]
        try:
            self._jwks = KeySet.import_key_set({"keys": signing})
        except (JoseError, ValueError, TypeError, KeyError):
            raise UpstreamError("server_error", f"{self.name}: JWKS holds no usable key") from None
        self._jwks_fetched_at = self._clock.now()
        self._jwks_generation += 1

    async def _ensure_jwks(self) -> None:
        if (
            self._jwks is not None
            and self._clock.now() - self._jwks_fetched_at < self._jwks_max_age
        ):
            return
        seen = self._jwks_generation
        async with self._jwks_lock:
            if self._jwks_generation != seen:
                return  # someone else fetched while we waited
            try:
                await self._fetch_jwks()
            except UpstreamError:
                if self._jwks is None:
                    raise
                # Keep the old keys while the IdP is unreachable.
                self._jwks_fetched_at = self._clock.now()

    def _candidates(self, kid: str | None, alg: str) -> list[Any]:
        if self._jwks is None:
            return []
        kty = _KTY_FOR_ALG_PREFIX[alg[:2]]
        found = []
        for key in self._jwks.keys:
            if kid is not None and key.kid != kid:
                continue
            if key.key_type != kty:
                continue
            if key.get("alg") not in (None, alg):
                continue
            if alg in _CRV_FOR_ALG and key.get("crv") != _CRV_FOR_ALG[alg]:
                continue
            found.append(key)
        return found

    async def _keys_for(self, kid: str | None, alg: str) -> list[Any]:
        await self._ensure_jwks()
        found = self._candidates(kid, alg)
        if found:
            return found
        # Unknown kid: the IdP may have rolled its key. Re-fetch once, rate-limited.
        seen = self._jwks_generation
        async with self._jwks_lock:
            if self._jwks_generation == seen:
                now = self._clock.now()
                last = self._jwks_last_forced
                if last is None or now - last >= self._jwks_refetch_interval:
                    self._jwks_last_forced = now
                    await self._fetch_jwks()
        return self._candidates(kid, alg)

    # ------------------------------------------------------------------ ID token
    async def verify_id_token(self, token: str, *, nonce: str | None) -> dict[str, Any]:
        """Verify signature and claims; return the claims. ``nonce=None``: not checked
        (refresh responses, OIDC Core §12.2)."""
        meta = await self.metadata()
        parts = token.split(".")
        header = _b64url_json(parts[0]) if len(parts) == 3 else None
        if not isinstance(header, dict):
            raise UpstreamError("server_error", f"{self.name}: ID token is not a signed JWT")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in meta.id_token_algs:
            raise UpstreamError(
                "server_error", f"{self.name}: ID token algorithm {_safe_code(alg)} refused"
            )
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise UpstreamError("server_error", f"{self.name}: ID token kid is not a string")
        claims: dict[str, Any] | None = None
        for key in await self._keys_for(kid, alg):
            try:
                claims = dict(jwt.decode(token, key, algorithms=[alg]).claims)
                break
            except (JoseError, ValueError):
                continue
        if claims is None:
            raise UpstreamError("server_error", f"{self.name}: ID token signature invalid")
        self._check_standard_claims(claims, nonce)
        self.check_claims(claims)
        return claims

    def _check_standard_claims(self, claims: dict[str, Any], nonce: str | None) -> None:
        def refuse(why: str) -> UpstreamError:
            return UpstreamError("server_error", f"{self.name}: ID token {why}")

        client_id = self.config.client_id
        if claims.get("iss") not in self.accepted_issuers():
            raise refuse("issuer mismatch")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise refuse("has no subject")
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud
        if not isinstance(audiences, list) or client_id not in audiences:
            raise refuse("audience mismatch")
        if (len(audiences) > 1 or "azp" in claims) and claims.get("azp") != client_id:
            raise refuse("authorized party mismatch")
        now = self._clock.now()
        skew = self.config.clock_skew
        exp, iat, nbf = claims.get("exp"), claims.get("iat"), claims.get("nbf")
        if not _is_number(exp) or now > exp + skew:
            raise refuse("expired")
        if not _is_number(iat) or iat > now + skew:
            raise refuse("issued in the future")
        if nbf is not None and (not _is_number(nbf) or nbf > now + skew):
            raise refuse("not yet valid")
        if nonce is not None:
            got = claims.get("nonce")
            if not isinstance(got, str) or not hmac.compare_digest(got.encode(), nonce.encode()):
                raise refuse("nonce mismatch")

    # ------------------------------------------------------------------ the flow
    async def authorization_url(
        self, *, redirect_uri: str, state: str, code_challenge: str, nonce: str
    ) -> str:
        meta = await self.metadata()
        params = self.authorize_params()
        params.update(
            response_type="code",
            client_id=self.config.client_id,
            redirect_uri=redirect_uri,
            scope=" ".join(self.config.scopes),
            state=state,
            nonce=nonce,
            code_challenge=code_challenge,
            code_challenge_method="S256",
        )
        return str(URL(meta.authorization_endpoint).update_query(params))

    async def _token_request(self, form: dict[str, str], what: str) -> dict[str, Any]:
        meta = await self.metadata()
        headers: dict[str, str] = {}
        body = dict(form)
        secret = self.config.client_secret
        if secret is None:
            body["client_id"] = self.config.client_id
        elif (
            "client_secret_basic" in meta.token_endpoint_auth_methods
            or "client_secret_post" not in meta.token_endpoint_auth_methods
        ):
            headers["Authorization"] = basic_auth_header(
                self.config.client_id, secret.get_secret_value()
            )
        else:
            body["client_id"] = self.config.client_id
            body["client_secret"] = secret.get_secret_value()
        status, answer = await self._http.request_json(
            "POST", meta.token_endpoint, what=what, data=body, headers=headers
        )
        if (
            status != 200
            or not isinstance(answer, dict)
            or "error" in answer
            or not isinstance(answer.get("access_token"), str)
        ):
            raise token_error(self.name, what, status, answer)
        return answer

    async def _userinfo(self, access_token: str, sub: str) -> dict[str, Any]:
        meta = await self.metadata()
        if meta.userinfo_endpoint is None:
            return {}
        status, doc = await self._http.request_json(
            "GET",
            meta.userinfo_endpoint,
            what="userinfo",
            headers={"Authorization": f"Bearer {access_token}"},
        )
        if status != 200 or not isinstance(doc, dict):
            raise UpstreamError("server_error", f"{self.name}: userinfo answered HTTP {status}")
        if doc.get("sub") != sub:  # OIDC Core §5.3.2: guards against token substitution
            raise UpstreamError("server_error", f"{self.name}: userinfo subject mismatch")
        return doc

    def _groups(self, claims: dict[str, Any]) -> list[str]:
        value: Any = claims
        for part in self.config.groups_claim.split("."):  # "realm_access.roles" works too
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, str):
            return [value]
        if isinstance(value, list):
            return [g for g in value if isinstance(g, str)]
        return []

    def identity_from_claims(self, claims: dict[str, Any]) -> Identity:
        def text(name: str) -> str | None:
            value = claims.get(name)
            return value if isinstance(value, str) and value else None

        verified = claims.get("email_verified")
        email = text("email")
        return Identity(
            subject=f"{self.subject_prefix}:{claims['sub']}",
            username=text("preferred_username") or email,
            email=email,
            email_verified=verified is True or verified == "true",
            name=text("name"),
            groups=self._groups(claims),
        )

    async def exchange(
        self,
        *,
        code: str,
        redirect_uri: str,
        code_verifier: str,
        nonce: str,
        state: str | None = None,
    ) -> tuple[Identity, UpstreamTokens]:
        answer = await self._token_request(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "code_verifier": code_verifier,
            },
            what="token endpoint",
        )
        id_token = answer.get("id_token")
        if not isinstance(id_token, str):
            raise UpstreamError("server_error", f"{self.name}: token answer has no ID token")
        claims = await self.verify_id_token(id_token, nonce=nonce)
        if self._use_userinfo:
            userinfo = await self._userinfo(answer["access_token"], claims["sub"])
            claims = {**userinfo, **claims}
        tokens = UpstreamTokens(
            access_token=answer["access_token"],
            token_type=str(answer.get("token_type") or "Bearer"),
            refresh_token=answer.get("refresh_token")
            if isinstance(answer.get("refresh_token"), str)
            else None,
            expires_at=expires_at_from(answer, self._clock.now()),
            scope=answer.get("scope") if isinstance(answer.get("scope"), str) else None,
            id_token=id_token,
        )
        return self.identity_from_claims(claims), tokens

    async def refresh(self, tokens: UpstreamTokens) -> UpstreamTokens:
        """Renew with the refresh token; without one there is nothing to renew and the token
        set comes back unchanged. The old refresh token is kept if no new one is issued."""
        if tokens.refresh_token is None:
            return tokens
        answer = await self._token_request(
            {"grant_type": "refresh_token", "refresh_token": tokens.refresh_token},
            what="token endpoint (refresh)",
        )
        id_token = tokens.id_token
        new_id_token = answer.get("id_token")
        if isinstance(new_id_token, str):
            claims = await self.verify_id_token(new_id_token, nonce=None)
            old = _jwt_payload(tokens.id_token) if tokens.id_token else None
            if isinstance(old, dict) and old.get("sub") != claims.get("sub"):
                raise UpstreamError("server_error", f"{self.name}: refreshed subject changed")
            id_token = new_id_token
        refresh_token = answer.get("refresh_token")
        scope = answer.get("scope")
        return UpstreamTokens(
            access_token=answer["access_token"],
            token_type=str(answer.get("token_type") or tokens.token_type),
            refresh_token=refresh_token if isinstance(refresh_token, str) else tokens.refresh_token,
            expires_at=expires_at_from(answer, self._clock.now()),
            scope=scope if isinstance(scope, str) else tokens.scope,
            id_token=id_token,
        )


def _build(
    config: OidcProviderConfig,
    *,
    issuer: str,
    storage: object,
    clock: Clock,
    session_factory: SessionFactory | None = None,
) -> OidcProvider:
    return OidcProvider(config, clock, session_factory)


# Registered as the ``oidc`` entry point of ``mcp_oauthd.providers`` (pyproject.toml).
PLUGIN = ProviderPlugin(name="oidc", config_model=OidcProviderConfig, factory=_build)

"""In-process fake identity providers for tests: real HTTP on 127.0.0.1, no login page.

``FakeOidcProvider`` is an OpenID Connect IdP (discovery, JWKS, /authorize, /token,
/userinfo) and ``FakeGitHub`` speaks GitHub's OAuth and API dialect. Both auto-approve a
configurable test user at their authorize endpoint (redirecting to ``redirect_uri`` with
``code`` and ``state``), record every request they receive, and have switches for the
failures a relying party must survive. Usage::

    async with FakeOidcProvider(clock=clock) as idp:
        config = OidcProviderConfig(issuer=idp.issuer, client_id=idp.client_id,
                                    client_secret=idp.client_secret, allow_insecure_http=True)
        url = await provider.authorization_url(...)
        answer = await idp.login(url)          # {"code": ..., "state": ...}
        idp.authorize_params[-1]               # what the relying party sent to /authorize
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import unquote

import aiohttp
from aiohttp import web
from joserfc import jwt
from joserfc.jwk import ECKey, KeyParameters, OctKey, RSAKey
from yarl import URL

from mcp_oauthd.clock import Clock, SystemClock

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    headers: dict[str, str]


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    code_challenge: str
    nonce: str | None
    scope: str
    used: bool = False


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def s256(verifier: str) -> str:
    return _b64url(hashlib.sha256(verifier.encode("ascii")).digest())


class _FakeServer:
    """An aiohttp app on 127.0.0.1 and a free port, recording every request."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.fail_with_500 = False  # every endpoint answers 500
        self.fail_paths: set[str] = set()  # only these paths answer 500
        self.hang = False  # every endpoint hangs until the server stops (timeouts)
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self._url: URL | None = None

    # ----------------------------------------------------------------- lifecycle
    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        self.routes(app)
        self._stopping.clear()
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self._url = URL.build(scheme="http", host=host, port=port)
        self.started()

    def started(self) -> None:
        """Hook: called once the URL is known."""

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (no trailing slash)."""
        if self._url is None:
            raise RuntimeError("the fake server is not started")
        return str(self._url).rstrip("/")

    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == path]

    # ----------------------------------------------------------------- plumbing
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        form: dict[str, str] = {}
        if request.method == "POST":
            form = {k: str(v) for k, v in (await request.post()).items()}
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                form=form,
                headers=dict(request.headers),
            )
        )
        if self.hang:
            await self._stopping.wait()
        if self.fail_with_500 or request.path in self.fail_paths:
            return web.json_response({"error": "server_error"}, status=500)
        return await handler(request)

    async def login(self, authorization_url: str) -> dict[str, str]:
        """Follow ``authorization_url`` like a browser would (auto-approved) and return the
        query of the redirect back to the relying party: ``code`` and ``state`` (or
        ``error``)."""
        async with (
            aiohttp.ClientSession() as session,
            session.get(authorization_url, allow_redirects=False) as response,
        ):
            location = response.headers.get("Location")
            if response.status != 302 or location is None:
                raise AssertionError(f"authorize answered {response.status}, not a redirect")
        return dict(URL(location).query)

    @staticmethod
    def _redirect(redirect_uri: str, **params: str) -> web.Response:
        raise web.HTTPFound(str(URL(redirect_uri).update_query(params)))


class FakeOidcProvider(_FakeServer):
    """A fake OpenID Connect IdP.

    Knobs (plain attributes, change them at any time):
    ``claims`` (the test user), ``expires_in``, ``issue_refresh_token``,
    ``rotate_refresh_tokens``, ``id_token_on_refresh``, ``refresh_invalid_grant``,
    ``token_error`` (/token answers 400 with that error code),
    ``deny`` (authorize answers ``error=access_denied``), ``fail_with_500``/``fail_paths``,
    ``hang``; ID-token defects: ``sign_with_wrong_key``, ``wrong_nonce``, ``wrong_aud``,
    ``wrong_iss``, ``expired``, ``alg_none``, ``sign_hs256``, ``extra_id_token_claims``;
    discovery: ``discovery_issuer`` (override the advertised issuer),
    ``token_endpoint_auth_methods``, ``userinfo_claims`` (override the userinfo answer).
    ``rotate_key()`` switches to a new signing key with a new ``kid``.
    """

    def __init__(
        self,
        *,
        client_id: str = "mcp-oauthd-test",
        client_secret: str | None = "fake-idp-client-secret-0123456789abcdef",
        alg: str = "ES256",
        claims: dict[str, Any] | None = None,
        clock: Clock | None = None,
        token_endpoint_auth_methods: list[str] | None = None,
        expires_in: int | None = 3600,
    ) -> None:
        super().__init__()
        if alg not in ("RS256", "ES256"):
            raise ValueError("the fake signs with RS256 or ES256")
        self.client_id = client_id
        self.client_secret = client_secret
        self.alg = alg
        self.clock: Clock = clock or SystemClock()
        self.claims: dict[str, Any] = claims or {
            "sub": "user-123",
            "email": "alice@example.com",
            "email_verified": True,
            "name": "Alice Example",
            "preferred_username": "alice",
            "groups": ["engineering", "admins"],
        }
        self.token_endpoint_auth_methods = token_endpoint_auth_methods or [
            "client_secret_basic",
            "client_secret_post",
        ]
        self.expires_in = expires_in
        self.issue_refresh_token = True
        self.rotate_refresh_tokens = False
        self.id_token_on_refresh = False
        self.refresh_invalid_grant = False
        self.token_error: str | None = None  # /token answers 400 with this error code
        self.deny = False
        self.sign_with_wrong_key = False
        self.wrong_nonce = False
        self.wrong_aud = False
        self.wrong_iss = False
        self.expired = False
        self.alg_none = False
        self.sign_hs256 = False
        self.extra_id_token_claims: dict[str, Any] = {}
        self.discovery_issuer: str | None = None
        self.userinfo_claims: dict[str, Any] | None = None
        self.last_client_auth: str | None = None  # "client_secret_basic" | "..._post" | "none"
        self._codes: dict[str, _Code] = {}
        self._access_tokens: set[str] = set()
        self._refresh_tokens: dict[str, str] = {}  # token -> scope
        self._keys: list[RSAKey | ECKey] = [self._new_key()]
        self._wrong_key = self._new_key()

    # ----------------------------------------------------------------- keys
    def _new_key(self) -> RSAKey | ECKey:
        params: KeyParameters = {"use": "sig", "alg": self.alg}
        if self.alg == "RS256":
            return RSAKey.generate_key(2048, parameters=params, auto_kid=True)
        return ECKey.generate_key("P-256", parameters=params, auto_kid=True)

    @property
    def kid(self) -> str:
        """The kid of the current signing key."""
        return str(self._keys[-1].kid)

    def rotate_key(self, *, keep_old: bool = False) -> str:
        """Sign with a new key from now on; the JWKS publishes it (and the old one only if
        ``keep_old``). Returns the new kid."""
        new = self._new_key()
        self._keys = [*self._keys, new] if keep_old else [new]
        return str(new.kid)

    # ----------------------------------------------------------------- URLs and records
    @property
    def issuer(self) -> str:
        return self.url

    @property
    def authorize_params(self) -> list[dict[str, str]]:
        """The query of every /authorize request, oldest first."""
        return [r.query for r in self.requests_to("/authorize")]

    @property
    def token_requests(self) -> list[RecordedRequest]:
        return self.requests_to("/token")

    @property
    def jwks_fetches(self) -> int:
        return len(self.requests_to("/jwks"))

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/jwks", self._jwks)
        app.router.add_get("/authorize", self._authorize)
        app.router.add_post("/token", self._token)
        app.router.add_get("/userinfo", self._userinfo)

    # ----------------------------------------------------------------- endpoints
    async def _discovery(self, request: web.Request) -> web.Response:
        base = self.url
        return web.json_response(
            {
                "issuer": self.discovery_issuer or self.issuer,
                "authorization_endpoint": f"{base}/authorize",
                "token_endpoint": f"{base}/token",
                "userinfo_endpoint": f"{base}/userinfo",
                "jwks_uri": f"{base}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": [self.alg],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": self.token_endpoint_auth_methods,
                "grant_types_supported": ["authorization_code", "refresh_token"],
            }
        )

    async def _jwks(self, request: web.Request) -> web.Response:
        return web.json_response({"keys": [k.as_dict(private=False) for k in self._keys]})

    async def _authorize(self, request: web.Request) -> web.Response:
        q = request.query
        redirect_uri = q.get("redirect_uri", "")
        if q.get("client_id") != self.client_id or not redirect_uri:
            return web.Response(status=400, text="unknown client or no redirect_uri")
        state = q.get("state", "")
        if self.deny:
            return self._redirect(redirect_uri, error="access_denied", state=state)
        if (
            q.get("response_type") != "code"
            or q.get("code_challenge_method") != "S256"
            or not q.get("code_challenge")
        ):
            return self._redirect(redirect_uri, error="invalid_request", state=state)
        code = secrets.token_urlsafe(24)
        self._codes[code] = _Code(
            client_id=self.client_id,
            redirect_uri=redirect_uri,
            code_challenge=q["code_challenge"],
            nonce=q.get("nonce"),
            scope=q.get("scope", ""),
        )
        return self._redirect(redirect_uri, code=code, state=state)

    def _client_auth(self, request: web.Request, form: dict[str, str]) -> bool:
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            try:
                raw = base64.b64decode(header[6:]).decode()
            except ValueError:
                return False
            cid, _, secret = raw.partition(":")
            self.last_client_auth = "client_secret_basic"
            return (
                "client_secret_basic" in self.token_endpoint_auth_methods
                and self.client_secret is not None
                and unquote(cid) == self.client_id
                and hmac.compare_digest(unquote(secret), self.client_secret)
                and "client_secret" not in form
            )
        if "client_secret" in form:
            self.last_client_auth = "client_secret_post"
            return (
                "client_secret_post" in self.token_endpoint_auth_methods
                and self.client_secret is not None
                and form.get("client_id") == self.client_id
                and hmac.compare_digest(form["client_secret"], self.client_secret)
            )
        self.last_client_auth = "none"
        return self.client_secret is None and form.get("client_id") == self.client_id

    @staticmethod
    def _error(error: str, status: int = 400) -> web.Response:
        return web.json_response(
            {"error": error}, status=status, headers={"Cache-Control": "no-store"}
        )

    async def _token(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        if not self._client_auth(request, form):
            return self._error("invalid_client", 401)
        if self.token_error is not None:
            return self._error(self.token_error)
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            return self._code_grant(form)
        if grant_type == "refresh_token":
            return self._refresh_grant(form)
        return self._error("unsupported_grant_type")

    def _code_grant(self, form: dict[str, str]) -> web.Response:
        record = self._codes.get(form.get("code", ""))
        if record is None or record.used:
            return self._error("invalid_grant")
        record.used = True
        if form.get("redirect_uri") != record.redirect_uri:
            return self._error("invalid_grant")
        verifier = form.get("code_verifier", "")
        if not verifier or not hmac.compare_digest(s256(verifier), record.code_challenge):
            return self._error("invalid_grant")
        body = self._issue(record.scope, with_refresh=self.issue_refresh_token)
        body["id_token"] = self.make_id_token(nonce=record.nonce)
        return web.json_response(body, headers={"Cache-Control": "no-store"})

    def _refresh_grant(self, form: dict[str, str]) -> web.Response:
        token = form.get("refresh_token", "")
        if self.refresh_invalid_grant or token not in self._refresh_tokens:
            return self._error("invalid_grant")
        scope = self._refresh_tokens[token]
        body = self._issue(scope, with_refresh=self.rotate_refresh_tokens)
        if self.rotate_refresh_tokens:
            del self._refresh_tokens[token]
        if self.id_token_on_refresh:
            body["id_token"] = self.make_id_token(nonce=None)
        return web.json_response(body, headers={"Cache-Control": "no-store"})

    def _issue(self, scope: str, *, with_refresh: bool) -> dict[str, Any]:
        access = "fake-at-" + secrets.token_urlsafe(24)
        self._access_tokens.add(access)
        body: dict[str, Any] = {"access_token": access, "token_type": "Bearer", "scope": scope}
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        if with_refresh:
            refresh = "fake-rt-" + secrets.token_urlsafe(24)
            self._refresh_tokens[refresh] = scope
            body["refresh_token"] = refresh
        return body

    def make_id_token(self, *, nonce: str | None) -> str:
        """An ID token for the test user, with whatever defects the knobs ask for."""
        now = int(self.clock.now())
        claims: dict[str, Any] = {
            **self.claims,
            "iss": "https://wrong-issuer.example" if self.wrong_iss else self.issuer,
            "aud": "some-other-client" if self.wrong_aud else self.client_id,
            "iat": now - 7200 if self.expired else now,
            "exp": now - 3600 if self.expired else now + 600,
            "auth_time": now,
        }
        if nonce is not None:
            claims["nonce"] = "not-the-nonce-you-sent" if self.wrong_nonce else nonce
        claims.update(self.extra_id_token_claims)
        if self.alg_none:
            header = _b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
            return f"{header}.{_b64url(json.dumps(claims).encode())}."
        if self.sign_hs256:
            key = OctKey.import_key((self.client_secret or "x" * 32).encode())
            return jwt.encode({"alg": "HS256", "typ": "JWT"}, claims, key, algorithms=["HS256"])
        signer = self._wrong_key if self.sign_with_wrong_key else self._keys[-1]
        header_fields = {"alg": self.alg, "typ": "JWT", "kid": self.kid}
        return jwt.encode(header_fields, claims, signer, algorithms=[self.alg])

    async def _userinfo(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self._access_tokens:
            return web.json_response(
                {"error": "invalid_token"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        if self.userinfo_claims is not None:
            return web.json_response(self.userinfo_claims)
        return web.json_response(self.claims)


@dataclass
class GithubUser:
    id: int = 4242
    login: str = "octocat"
    name: str | None = "The Octocat"
    email: str | None = "octocat-public@example.com"  # public profile email (unverified)
    emails: list[dict[str, Any]] = field(
        default_factory=lambda: [
            {"email": "old@example.com", "primary": False, "verified": True},
            {"email": "octocat@example.com", "primary": True, "verified": True},
            {"email": "unverified@example.com", "primary": False, "verified": False},
        ]
    )
    orgs: list[str] = field(default_factory=lambda: ["acme", "octo-org"])


class FakeGitHub(_FakeServer):
    """A fake github.com + api.github.com on one server (``base_url == api_url``).

    Knobs: ``user`` (a ``GithubUser``), ``expiring_tokens`` (issue refresh tokens and
    ``expires_in`` like GitHub Apps), ``expires_in``, ``refresh_invalid`` (refresh answers
    ``bad_refresh_token``), ``emails_status`` (e.g. 404: no ``user:email`` scope),
    ``deny``, ``fail_with_500``/``fail_paths``, ``hang``.
    """

    def __init__(
        self,
        *,
        client_id: str = "gh-client-id",
        client_secret: str = "gh-client-secret",
        user: GithubUser | None = None,
    ) -> None:
        super().__init__()
        self.client_id = client_id
        self.client_secret = client_secret
        self.user = user or GithubUser()
        self.expiring_tokens = False
        self.expires_in = 28800
        self.refresh_invalid = False
        self.emails_status = 200
        self.deny = False
        self._codes: dict[str, _Code] = {}
        self._access_tokens: set[str] = set()
        self._refresh_tokens: set[str] = set()

    @property
    def base_url(self) -> str:
        return self.url

    @property
    def api_url(self) -> str:
        return self.url

    @property
    def authorize_params(self) -> list[dict[str, str]]:
        return [r.query for r in self.requests_to("/login/oauth/authorize")]

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/login/oauth/authorize", self._authorize)
        app.router.add_post("/login/oauth/access_token", self._access_token)
        app.router.add_get("/user", self._user)
        app.router.add_get("/user/emails", self._emails)
        app.router.add_get("/user/orgs", self._orgs)

    async def _authorize(self, request: web.Request) -> web.Response:
        q = request.query
        redirect_uri = q.get("redirect_uri", "")
        if q.get("client_id") != self.client_id or not redirect_uri:
            return web.Response(status=404, text="Not Found")
        state = q.get("state", "")
        if self.deny:
            return self._redirect(
                redirect_uri,
                error="access_denied",
                error_description="The user has denied your application access.",
                state=state,
            )
        code = secrets.token_hex(10)
        self._codes[code] = _Code(
            client_id=self.client_id,
            redirect_uri=redirect_uri,
            code_challenge=q.get("code_challenge", ""),
            nonce=None,
            scope=q.get("scope", ""),
        )
        return self._redirect(redirect_uri, code=code, state=state)

    def _answer(self, request: web.Request, body: dict[str, Any]) -> web.Response:
        # GitHub answers 200 even for errors, form-encoded unless JSON is asked for.
        if "application/json" in request.headers.get("Accept", ""):
            return web.json_response(body)
        return web.Response(text=str(URL.build(query=body).query_string))

    async def _access_token(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        if form.get("client_id") != self.client_id or not hmac.compare_digest(
            form.get("client_secret", ""), self.client_secret
        ):
            return self._answer(request, {"error": "incorrect_client_credentials"})
        if form.get("grant_type") == "refresh_token":
            token = form.get("refresh_token", "")
            if self.refresh_invalid or token not in self._refresh_tokens:
                return self._answer(request, {"error": "bad_refresh_token"})
            self._refresh_tokens.discard(token)
            return self._answer(request, self._issue("read:user,user:email,read:org"))
        record = self._codes.get(form.get("code", ""))
        if record is None or record.used:
            return self._answer(request, {"error": "bad_verification_code"})
        record.used = True
        if form.get("redirect_uri", record.redirect_uri) != record.redirect_uri:
            return self._answer(request, {"error": "redirect_uri_mismatch"})
        if record.code_challenge and not hmac.compare_digest(
            s256(form.get("code_verifier", "")), record.code_challenge
        ):
            return self._answer(request, {"error": "bad_verification_code"})
        return self._answer(request, self._issue(record.scope.replace(" ", ",")))

    def _issue(self, scope: str) -> dict[str, Any]:
        access = "gho_" + secrets.token_urlsafe(27)
        self._access_tokens.add(access)
        body: dict[str, Any] = {"access_token": access, "token_type": "bearer", "scope": scope}
        if self.expiring_tokens:
            refresh = "ghr_" + secrets.token_urlsafe(60)
            self._refresh_tokens.add(refresh)
            body.update(
                expires_in=self.expires_in,
                refresh_token=refresh,
                refresh_token_expires_in=15897600,
            )
        return body

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() in ("bearer", "token") and token in self._access_tokens

    @staticmethod
    def _bad_credentials() -> web.Response:
        return web.json_response({"message": "Bad credentials"}, status=401)

    async def _user(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._bad_credentials()
        u = self.user
        return web.json_response({"id": u.id, "login": u.login, "name": u.name, "email": u.email})

    async def _emails(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._bad_credentials()
        if self.emails_status != 200:
            return web.json_response({"message": "Not Found"}, status=self.emails_status)
        return web.json_response(self.user.emails)

    async def _orgs(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._bad_credentials()
        per_page = int(request.query.get("per_page", "30"))
        page = int(request.query.get("page", "1"))
        chunk = self.user.orgs[(page - 1) * per_page : page * per_page]
        return web.json_response([{"login": o, "id": i} for i, o in enumerate(chunk)])

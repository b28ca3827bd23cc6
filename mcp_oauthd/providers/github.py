"""GitHub (and GitHub Enterprise): plain OAuth 2.0, no ID token.

Who logged in comes from the API: ``/user`` (numeric id: the stable subject, ``login``:
the username), ``/user/emails`` (only the *primary verified* address is used; the public
profile email is unverified and ignored) and ``/user/orgs`` (organisation logins, for the
access policy). GitHub answers a failed token request with HTTP 200 and an ``error``
field; ``bad_verification_code`` and ``bad_refresh_token`` mean the grant is dead.
"""

from __future__ import annotations

import asyncio
from typing import Any

from yarl import URL

from mcp_oauthd.clock import Clock
from mcp_oauthd.config.models import GithubProviderConfig
from mcp_oauthd.plugins import ProviderPlugin
from mcp_oauthd.providers._http import HttpClient, SessionFactory, check_upstream_url
from mcp_oauthd.providers.base import Identity, UpstreamError, UpstreamTokens
from mcp_oauthd.providers.oidc import expires_at_from, token_error

_DEAD_GRANT_ERRORS = frozenset({"bad_verification_code", "bad_refresh_token", "invalid_grant"})
_API_HEADERS = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
_MAX_ORG_PAGES = 10


class GithubProvider:
    name = "github"

    def __init__(
        self,
        config: GithubProviderConfig,
        clock: Clock,
        session_factory: SessionFactory | None = None,
        *,
        allow_insecure_http: bool = False,
    ) -> None:
        insecure = allow_insecure_http or config.allow_insecure_http
        check_upstream_url(config.base_url, allow_insecure_http=insecure, what="github base_url")
        check_upstream_url(config.api_url, allow_insecure_http=insecure, what="github api_url")
        self.config = config
        self._clock = clock
        self._http = HttpClient(
            provider=self.name, timeout=config.timeout, session_factory=session_factory
        )
        base = URL(config.base_url.rstrip("/"))
        self._authorize_url = base.joinpath("login/oauth/authorize")
        self._token_url = str(base.joinpath("login/oauth/access_token"))
        self._api = URL(config.api_url.rstrip("/"))

    async def start(self) -> None:
        """Nothing to discover; the session is created on first use."""

    async def close(self) -> None:
        await self._http.close()

    async def authorization_url(
        self, *, redirect_uri: str, state: str, code_challenge: str, nonce: str
    ) -> str:
        # No nonce: GitHub has no ID token. PKCE S256 is supported by GitHub.
        return str(
            self._authorize_url.with_query(
                client_id=self.config.client_id,
                redirect_uri=redirect_uri,
                scope=" ".join(self.config.scopes),
                state=state,
                code_challenge=code_challenge,
                code_challenge_method="S256",
            )
        )

    async def _token_request(self, form: dict[str, str], what: str) -> dict[str, Any]:
        body = {
            **form,
            "client_id": self.config.client_id,
            "client_secret": self.config.client_secret.get_secret_value(),
        }
        status, answer = await self._http.request_json(
            "POST", self._token_url, what=what, data=body
        )
        if isinstance(answer, dict) and answer.get("error") in _DEAD_GRANT_ERRORS:
            raise UpstreamError("invalid_grant", f"github: {what} says the grant is dead")
        if (
            status != 200
            or not isinstance(answer, dict)
            or "error" in answer
            or not isinstance(answer.get("access_token"), str)
        ):
            raise token_error(self.name, what, status, answer)
        return answer

    def _tokens(self, answer: dict[str, Any], previous: UpstreamTokens | None) -> UpstreamTokens:
        refresh = answer.get("refresh_token")
        scope = answer.get("scope")
        return UpstreamTokens(
            access_token=answer["access_token"],
            token_type=str(answer.get("token_type") or "Bearer"),
            refresh_token=refresh
            if isinstance(refresh, str) and refresh
            else (previous.refresh_token if previous else None),
            expires_at=expires_at_from(answer, self._clock.now()),
            scope=scope if isinstance(scope, str) else (previous.scope if previous else None),
        )

    async def _api_get(
        self, path: str, token: str, params: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        return await self._http.request_json(
            "GET",
            str(self._api.joinpath(path)),
            what=f"API /{path}",
            headers={**_API_HEADERS, "Authorization": f"Bearer {token}"},
            params=params,
        )

    async def _user(self, token: str) -> dict[str, Any]:
        status, user = await self._api_get("user", token)
        if status == 401:
            raise UpstreamError("invalid_grant", "github: API /user refused the token")
        if status != 200 or not isinstance(user, dict):
            raise UpstreamError("server_error", f"github: API /user answered HTTP {status}")
        if not isinstance(user.get("id"), int) or not isinstance(user.get("login"), str):
            raise UpstreamError("server_error", "github: API /user lacks id or login")
        return user

    async def _primary_email(self, token: str) -> str | None:
        status, emails = await self._api_get("user/emails", token, {"per_page": "100"})
        if status != 200 or not isinstance(emails, list):
            return None  # no user:email scope: no verified email, not an error
        for entry in emails:
            if (
                isinstance(entry, dict)
                and entry.get("primary") is True
                and entry.get("verified") is True
                and isinstance(entry.get("email"), str)
            ):
                return str(entry["email"])
        return None

    async def _orgs(self, token: str) -> list[str]:
        logins: list[str] = []
        for page in range(1, _MAX_ORG_PAGES + 1):
            status, orgs = await self._api_get(
                "user/orgs", token, {"per_page": "100", "page": str(page)}
            )
            if status != 200 or not isinstance(orgs, list):
                return logins
            logins.extend(
                str(o["login"])
                for o in orgs
                if isinstance(o, dict) and isinstance(o.get("login"), str)
            )
            if len(orgs) < 100:
                break
        return logins

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
            {"code": code, "redirect_uri": redirect_uri, "code_verifier": code_verifier},
            what="token endpoint",
        )
        tokens = self._tokens(answer, None)
        user, email, orgs = await asyncio.gather(
            self._user(tokens.access_token),
            self._primary_email(tokens.access_token),
            self._orgs(tokens.access_token),
        )
        name = user.get("name")
        identity = Identity(
            subject=f"github:{user['id']}",
            username=user["login"],
            email=email,
            email_verified=email is not None,
            name=name if isinstance(name, str) and name else None,
            github_orgs=orgs,
        )
        return identity, tokens

    async def refresh(self, tokens: UpstreamTokens) -> UpstreamTokens:
        """GitHub Apps with expiring tokens issue a refresh token; OAuth Apps issue tokens
        that never expire, which come back unchanged."""
        if tokens.refresh_token is None:
            return tokens
        answer = await self._token_request(
            {"grant_type": "refresh_token", "refresh_token": tokens.refresh_token},
            what="token endpoint (refresh)",
        )
        return self._tokens(answer, tokens)


def _build(
    config: GithubProviderConfig,
    *,
    issuer: str,
    storage: object,
    clock: Clock,
    session_factory: SessionFactory | None = None,
) -> GithubProvider:
    return GithubProvider(config, clock, session_factory)


# Registered as the ``github`` entry point of ``mcp_oauthd.providers`` (pyproject.toml).
PLUGIN = ProviderPlugin(name="github", config_model=GithubProviderConfig, factory=_build)

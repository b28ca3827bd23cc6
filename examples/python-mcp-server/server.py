"""An MCP server on the official Python SDK, protected by mcp-oauthd.

It runs in one of two modes (``MCP_AUTH``):

- ``introspection`` (default): the server checks every request itself. It asks
  mcp-oauthd's RFC 7662 introspection endpoint, authenticated with its own resource-server
  credentials, whether the bearer token is active *for this resource* and carries the
  required scopes; otherwise it answers 401/403 with the ``WWW-Authenticate`` challenge
  MCP clients use for discovery (RFC 6750 §3, RFC 9728 §5.1). It also serves its own
  protected resource metadata at ``/.well-known/oauth-protected-resource/<path>``.
- ``nginx``: no auth code at all. nginx ``auth_request`` (see deploy/nginx) has checked
  the token already and passes the identity as ``X-Auth-*`` headers. Listen on loopback
  only, so nothing but nginx can reach the server.

Either way the tools read who is calling from the same ``X-Auth-*`` headers: in
introspection mode the middleware below sets them (after removing any a client sent).

Configuration, from the environment:

    MCP_RESOURCE              this server's canonical URI, e.g. https://files.example.com/mcp
    OAUTHD_ISSUER             mcp-oauthd's issuer, e.g. https://auth.example.com
    OAUTHD_INTROSPECTION_URL  default: $OAUTHD_ISSUER/oauth/introspect
    MCP_CLIENT_ID             this server's introspection_client_id in mcp-oauthd's config
    MCP_CLIENT_SECRET         its introspection_client_secret
    MCP_REQUIRED_SCOPES       scopes every request needs, space separated (default: none)
    MCP_AUTH                  introspection | nginx
    HOST, PORT                where to listen (default 127.0.0.1:8000)

Run: ``pip install mcp uvicorn`` then ``python server.py``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx2  # the HTTP client the MCP SDK itself uses
import uvicorn
from mcp.server.mcpserver import Context, MCPServer

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

IDENTITY_HEADERS = (
    "x-auth-subject",
    "x-auth-email",
    "x-auth-username",
    "x-auth-scopes",
    "x-auth-client-id",
)


@dataclass(frozen=True)
class Settings:
    resource: str
    issuer: str = ""
    introspection_url: str = ""
    client_id: str = ""
    client_secret: str = ""
    required_scopes: list[str] = field(default_factory=list)
    mode: str = "introspection"

    @classmethod
    def from_env(cls) -> Settings:
        issuer = os.environ.get("OAUTHD_ISSUER", "").rstrip("/")
        return cls(
            resource=os.environ["MCP_RESOURCE"],
            issuer=issuer,
            introspection_url=os.environ.get(
                "OAUTHD_INTROSPECTION_URL", f"{issuer}/oauth/introspect"
            ),
            client_id=os.environ.get("MCP_CLIENT_ID", ""),
            client_secret=os.environ.get("MCP_CLIENT_SECRET", ""),
            required_scopes=os.environ.get("MCP_REQUIRED_SCOPES", "").split(),
            mode=os.environ.get("MCP_AUTH", "introspection"),
        )

    @property
    def path(self) -> str:
        return urlsplit(self.resource).path or "/"

    @property
    def resource_metadata_url(self) -> str:
        """RFC 9728 §3.1: the well-known segment goes between the host and the path."""
        parts = urlsplit(self.resource)
        path = "/.well-known/oauth-protected-resource" + parts.path.rstrip("/")
        return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def build_mcp() -> MCPServer[Any]:
    mcp: MCPServer[Any] = MCPServer("files-example")

    @mcp.tool()
    def whoami(ctx: Context) -> dict[str, str]:
        """Who is calling, as mcp-oauthd vouches for it."""
        headers = ctx.headers or {}
        return {name[len("x-auth-") :]: headers.get(name, "") for name in IDENTITY_HEADERS}

    @mcp.tool()
    def echo(text: str) -> str:
        """Echo the text back."""
        return f"echo: {text}"

    return mcp


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class IntrospectionAuth:
    """ASGI middleware: bearer token -> mcp-oauthd introspection -> pass, 401 or 403."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self._http: httpx2.AsyncClient | None = None

    @property
    def http(self) -> httpx2.AsyncClient:
        if self._http is None:
            self._http = httpx2.AsyncClient(timeout=5.0)
        return self._http

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            try:
                await self.app(scope, receive, send)
            finally:
                if self._http is not None:
                    await self._http.aclose()
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path == urlsplit(self.settings.resource_metadata_url).path:
            await self._metadata(send)
            return
        # Identity headers come from us, never from the client.
        headers = [
            (k, v)
            for k, v in scope["headers"]
            if k.decode("latin-1").lower() not in IDENTITY_HEADERS
        ]
        token = None
        for key, value in headers:
            if key.lower() == b"authorization":
                scheme, _, credentials = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and credentials.strip():
                    token = credentials.strip()
        if token is None:
            await self._challenge(send, 401, None)  # RFC 6750 §3.1: no error code
            return
        claims = await self._introspect(token)
        if claims is None:
            await self._challenge(send, 503, None)
            return
        if not claims.get("active") or claims.get("aud") != self.settings.resource:
            await self._challenge(send, 401, "invalid_token")
            return
        granted = str(claims.get("scope", "")).split()
        if not set(self.settings.required_scopes) <= set(granted):
            await self._challenge(send, 403, "insufficient_scope")
            return
        identity = {
            "x-auth-subject": claims.get("sub"),
            "x-auth-email": claims.get("email"),
            "x-auth-username": claims.get("username"),
            "x-auth-scopes": " ".join(granted),
            "x-auth-client-id": claims.get("client_id"),
        }
        headers += [(k.encode(), str(v).encode()) for k, v in identity.items() if v]
        await self.app({**scope, "headers": headers}, receive, send)

    async def _introspect(self, token: str) -> dict[str, Any] | None:
        try:
            response = await self.http.post(
                self.settings.introspection_url,
                data={"token": token, "token_type_hint": "access_token"},
                auth=httpx2.BasicAuth(self.settings.client_id, self.settings.client_secret),
            )
        except httpx2.HTTPError:
            return None
        if response.status_code != 200:
            return None
        body = response.json()
        return body if isinstance(body, dict) else None

    async def _metadata(self, send: Send) -> None:
        body = json.dumps(
            {
                "resource": self.settings.resource,
                "authorization_servers": [self.settings.issuer],
                "scopes_supported": self.settings.required_scopes,
                "bearer_methods_supported": ["header"],
            }
        ).encode()
        await _respond(send, 200, body, [(b"content-type", b"application/json")])

    async def _challenge(self, send: Send, status: int, error: str | None) -> None:
        parts = [f"resource_metadata={_quote(self.settings.resource_metadata_url)}"]
        if self.settings.required_scopes:
            parts.append(f"scope={_quote(' '.join(self.settings.required_scopes))}")
        if error:
            parts.append(f"error={_quote(error)}")
        headers = [(b"content-type", b"application/json")]
        if status in (401, 403):
            headers.append((b"www-authenticate", ("Bearer " + ", ".join(parts)).encode()))
        body = json.dumps({"error": error or ("unauthorized" if status == 401 else "unavailable")})
        await _respond(send, status, body.encode(), headers)


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def build_app(settings: Settings, host: str = "127.0.0.1") -> ASGIApp:
    app = build_mcp().streamable_http_app(
        streamable_http_path=settings.path, stateless_http=True, json_response=True, host=host
    )
    if settings.mode == "nginx":
        return app  # nginx auth_request did the checking; see deploy/nginx
    if settings.mode != "introspection":
        raise SystemExit(f"MCP_AUTH must be introspection or nginx, not {settings.mode!r}")
    return IntrospectionAuth(app, settings)


def main() -> None:
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8000"))
    uvicorn.run(build_app(Settings.from_env(), host), host=host, port=port)


if __name__ == "__main__":
    main()

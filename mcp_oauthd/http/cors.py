"""CORS for browser-based MCP clients (MCP Inspector, web apps), with aiohttp-cors.

Only the JSON endpoints a browser client calls get CORS: discovery documents, token,
revocation, registration and JWKS. Routes are picked by *path prefix* after every route
is added, so an endpoint added later under one of these paths is covered without
touching this module, and nothing else ever is:

- never the login, consent, authorize or callback pages: a cross-origin script must not
  read or drive them (RFC 9700 §4.7, §4.16);
- never introspection or ``/auth/verify``: resource servers call them server to server.

Responses never allow credentials (``Access-Control-Allow-Credentials`` is not sent): the
endpoints behind CORS authenticate with what the request carries (client credentials,
PKCE verifier, bearer), never with cookies, so a page gets nothing from a user's
ambient session.
"""

from __future__ import annotations

from collections.abc import Iterable

import aiohttp_cors
from aiohttp import hdrs, web

from mcp_oauthd.config.models import Config
from mcp_oauthd.http.openapi import OPENAPI_PATH
from mcp_oauthd.oauth import metadata as md

#: Request headers browser clients send: ``Authorization`` (client_secret_basic, RFC 7592
#: registration access token), ``Content-Type`` (JSON registration), and
#: ``MCP-Protocol-Version``, which MCP SDKs add to discovery requests.
ALLOW_HEADERS = ("Authorization", "Content-Type", "MCP-Protocol-Version")
#: Response headers a client script needs to read: the bearer challenge, rate-limit
#: back-off, and the request id to quote in a bug report.
EXPOSE_HEADERS = ("WWW-Authenticate", "Retry-After", "X-Request-ID")


def cors_paths(config: Config) -> tuple[str, ...]:
    """The path prefixes that get CORS. A prefix matches itself and anything below it."""
    prefix = md.issuer_path(config.issuer)
    return (
        "/.well-known",  # AS metadata, OIDC discovery, protected resource metadata
        prefix + "/.well-known",  # OIDC discovery appended to an issuer with a path
        prefix + md.TOKEN_PATH,
        prefix + md.REVOKE_PATH,
        prefix + md.REGISTER_PATH,  # RFC 7591 registration and RFC 7592 management
        prefix + md.JWKS_PATH,
        OPENAPI_PATH,
    )


def _covered(path: str, prefixes: Iterable[str]) -> bool:
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in prefixes)


def setup_cors(app: web.Application, config: Config) -> frozenset[str]:
    """Enable CORS on every route whose path is under :func:`cors_paths`.

    Call it once, after every route is added. Returns the canonical paths that got CORS
    (empty when no origin is configured: then nothing is changed at all).
    """
    origins = config.cors.allowed_origins
    if not origins:
        return frozenset()
    options = aiohttp_cors.ResourceOptions(  # type: ignore[no-untyped-call]
        allow_credentials=False,
        allow_headers=ALLOW_HEADERS,
        expose_headers=EXPOSE_HEADERS,
        max_age=int(config.cors.max_age),
    )
    cors = aiohttp_cors.setup(app, defaults={origin: options for origin in origins})
    prefixes = cors_paths(config)
    covered: set[web.AbstractResource] = set()
    for route in list(app.router.routes()):
        resource = route.resource
        if resource is None or isinstance(resource, web.StaticResource):
            continue
        if route.method in (hdrs.METH_OPTIONS, hdrs.METH_HEAD):
            continue  # OPTIONS is the preflight itself; HEAD rides on GET
        if not _covered(resource.canonical, prefixes):
            continue
        cors.add(route)
        covered.add(resource)

    async def vary_on_origin(request: web.Request, response: web.StreamResponse) -> None:
        # The answer depends on Origin (it is echoed back); shared caches must key on it,
        # or a cached discovery document would carry another site's origin.
        route = request.match_info.route
        if route.resource in covered:
            vary = response.headers.get(hdrs.VARY, "")
            if "origin" not in vary.lower():
                response.headers[hdrs.VARY] = f"{vary}, Origin" if vary else "Origin"

    app.on_response_prepare.append(vary_on_origin)
    return frozenset(r.canonical for r in covered)

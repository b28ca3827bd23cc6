"""Endpoints for resource servers: introspection, JWKS, and nginx's ``auth_request``.

- ``POST /oauth/introspect`` (RFC 7662) for MCP servers with introspection credentials;
- ``GET /oauth/jwks`` (RFC 7517) with ``tokens.format: jwt``: previous, current and next
  public keys, so resource servers validate JWT access tokens locally;
- ``GET /auth/verify``: the target of nginx ``auth_request``. nginx passes the client's
  ``Authorization`` header and names the resource (``X-Auth-Resource`` header or
  ``resource`` query argument) and the scopes the location requires (``X-Auth-Scope`` or
  ``scope``), plus ``X-Original-URI`` (nginx) or ``X-Original-URL`` (ingress-nginx) for the
  config's ``path_scopes``. 200 carries the
  identity headers (``X-Auth-Subject``, ``X-Auth-Email``, ``X-Auth-Username``,
  ``X-Auth-Scopes``, ``X-Auth-Client-Id``); 401/403 carry the ``WWW-Authenticate``
  challenge nginx hands back to the client.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from mcp_oauthd.http import keys
from mcp_oauthd.http.api import NO_STORE, read_form
from mcp_oauthd.oauth.metadata import INTROSPECT_PATH, JWKS_PATH
from mcp_oauthd.service.introspect import IntrospectionService

VERIFY_PATH = "/auth/verify"
INTROSPECTION = web.AppKey("introspection", IntrospectionService)
#: Resource servers may cache the JWKS this long; a new key is published one whole
#: rotation interval before it signs, so caching never makes a fresh token unverifiable.
JWKS_MAX_AGE = 300


async def introspect(request: web.Request) -> web.Response:
    form = await read_form(request)
    service = request.app[INTROSPECTION]
    body = await service.introspect(form, request.headers.get("Authorization"))
    # RFC 7662 §4: introspection responses must not be cached by intermediaries.
    return web.json_response(body, headers=NO_STORE)


async def jwks(request: web.Request) -> web.Response:
    manager = request.app[keys.SERVICES].signing_keys
    if manager is None:
        raise web.HTTPNotFound(reason="JWT access tokens are not enabled (tokens.format)")
    body = await manager.jwks()
    response = web.json_response(body, content_type="application/jwk-set+json")
    response.headers["Cache-Control"] = f"public, max-age={JWKS_MAX_AGE}"
    return response


async def verify(request: web.Request) -> web.Response:
    headers = request.headers
    verified = await request.app[INTROSPECTION].verify(
        authorization=headers.get("Authorization"),
        resource_uri=headers.get("X-Auth-Resource") or request.query.get("resource"),
        scope=headers.get("X-Auth-Scope") or request.query.get("scope"),
        original_uri=_original_path(headers.get("X-Original-URI"), headers.get("X-Original-URL")),
    )
    return web.Response(status=200, headers={**verified.headers(), **NO_STORE})


def add_routes(app: web.Application, prefix: str, service: IntrospectionService) -> None:
    app[INTROSPECTION] = service
    app.router.add_post(prefix + INTROSPECT_PATH, introspect)
    app.router.add_get(prefix + JWKS_PATH, jwks)
    app.router.add_get(prefix + VERIFY_PATH, verify)


def _original_path(uri: str | None, url: str | None) -> str | None:
    """The protected request's path: nginx sends ``X-Original-URI`` (a path), ingress-nginx
    ``X-Original-URL`` (an absolute URL)."""
    if uri:
        return uri
    if url:
        return urlsplit(url).path or "/"
    return None

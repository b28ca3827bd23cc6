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
from multidict import CIMultiDict

from mcp_oauthd.http import keys
from mcp_oauthd.http.api import read_form
from mcp_oauthd.http.middleware import Handler
from mcp_oauthd.http.responses import NO_STORE, SECURITY_HEADERS, json_response
from mcp_oauthd.oauth.metadata import INTROSPECT_PATH, JWKS_PATH
from mcp_oauthd.service.introspect import IntrospectionService

VERIFY_PATH = "/auth/verify"
INTROSPECTION = web.AppKey("introspection", IntrospectionService)
#: Resource servers may cache the JWKS this long; a new key is published one whole
#: rotation interval before it signs, so caching never makes a fresh token unverifiable.
JWKS_MAX_AGE = 300
#: What every 200 from /auth/verify carries besides the identity headers.
_VERIFIED = CIMultiDict([*NO_STORE.items(), *SECURITY_HEADERS])


def introspect_handler(service: IntrospectionService) -> Handler:
    # A closure over the service: the hottest handler looks nothing up per request.
    async def introspect(request: web.Request) -> web.Response:
        form = await read_form(request)
        body = await service.introspect(form, request.headers.get("Authorization"))
        # RFC 7662 §4: introspection responses must not be cached by intermediaries.
        return json_response(body, headers=NO_STORE)

    return introspect


async def jwks(request: web.Request) -> web.Response:
    manager = request.app[keys.SERVICES].signing_keys
    if manager is None:
        raise web.HTTPNotFound(reason="JWT access tokens are not enabled (tokens.format)")
    body = await manager.jwks()
    response = json_response(body, content_type="application/jwk-set+json")
    response.headers["Cache-Control"] = f"public, max-age={JWKS_MAX_AGE}"
    return response


def verify_handler(service: IntrospectionService) -> Handler:
    async def verify(request: web.Request) -> web.Response:
        headers = request.headers
        query = request.query
        verified = await service.verify(
            authorization=headers.get("Authorization"),
            resource_uri=headers.get("X-Auth-Resource") or query.get("resource"),
            scope=headers.get("X-Auth-Scope") or query.get("scope"),
            original_uri=_original_path(
                headers.get("X-Original-URI"), headers.get("X-Original-URL")
            ),
        )
        response_headers = _VERIFIED.copy()
        response_headers.extend(verified.headers())
        return web.Response(status=200, headers=response_headers)

    return verify


def add_routes(
    app: web.Application, prefix: str, service: IntrospectionService
) -> dict[tuple[str, str], Handler]:
    """Add the routes; return the hot ones ((method, path) -> handler) for the pipeline's
    hot lane. Their handlers read nothing from ``request.app`` or ``request.match_info``."""
    app[INTROSPECTION] = service
    introspect = introspect_handler(service)
    verify = verify_handler(service)
    app.router.add_post(prefix + INTROSPECT_PATH, introspect)
    app.router.add_get(prefix + JWKS_PATH, jwks)
    app.router.add_get(prefix + VERIFY_PATH, verify)
    return {("POST", prefix + INTROSPECT_PATH): introspect, ("GET", prefix + VERIFY_PATH): verify}


def _original_path(uri: str | None, url: str | None) -> str | None:
    """The protected request's path: nginx sends ``X-Original-URI`` (a path), ingress-nginx
    ``X-Original-URL`` (an absolute URL)."""
    if uri:
        return uri
    if url:
        return urlsplit(url).path or "/"
    return None

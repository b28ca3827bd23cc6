"""Discovery documents at every URL of the MCP discovery order (RFC 8414 §3, OIDC
Discovery §4, RFC 9728 §3). The AS document is rendered once per config (a SIGHUP reload
may change the resources and so ``scopes_supported``), not per request."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from mcp_oauthd.config.models import Config
from mcp_oauthd.http import keys
from mcp_oauthd.oauth import metadata as md


def _json(body: dict[str, Any]) -> web.Response:
    response = web.Response(body=json.dumps(body).encode(), content_type="application/json")
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


def add_routes(
    app: web.Application, config: Config, as_meta: Callable[[Config], dict[str, Any]]
) -> None:
    """``as_meta`` renders the AS metadata for a config; the routes follow reloads."""
    prefix = md.issuer_path(config.issuer)
    rendered: dict[int, bytes] = {}

    def current() -> Config:
        return app[keys.SERVICES].config

    async def as_metadata(_: web.Request) -> web.Response:
        config_now = current()
        as_body = rendered.get(id(config_now))
        if as_body is None:
            rendered.clear()
            as_body = rendered[id(config_now)] = json.dumps(as_meta(config_now)).encode()
        response = web.Response(body=as_body, content_type="application/json")
        response.headers["Cache-Control"] = "public, max-age=300"
        return response

    # RFC 8414 §3.1: path-inserted for an issuer with a path; OIDC Discovery §4.1: appended.
    paths = {md.AS_WELL_KNOWN + prefix, md.OIDC_WELL_KNOWN + prefix, prefix + md.OIDC_WELL_KNOWN}
    if prefix:
        # Clients that ignore the issuer path still find us at the root forms.
        paths |= {md.AS_WELL_KNOWN, md.OIDC_WELL_KNOWN}
    for path in sorted(paths):
        app.router.add_get(path, as_metadata)

    async def protected_resource(request: web.Request) -> web.Response:
        tail = request.match_info.get("tail", "")
        config_now = current()
        resource = md.find_resource_by_path(
            config_now, "/" + tail if tail else "", request.headers.get("Host")
        )
        if resource is None:
            raise web.HTTPNotFound(reason="no protected resource at this path")
        return _json(md.protected_resource_metadata(config_now, resource))

    app.router.add_get(md.PRM_WELL_KNOWN, protected_resource)
    app.router.add_get(md.PRM_WELL_KNOWN + "/{tail:.+}", protected_resource)

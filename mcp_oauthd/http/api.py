"""JSON endpoints: token, revocation, health."""

from __future__ import annotations

from aiohttp import web

from mcp_oauthd.http import keys
from mcp_oauthd.http.middleware import Handler
from mcp_oauthd.http.responses import NO_STORE, json_response
from mcp_oauthd.oauth import client_auth
from mcp_oauthd.oauth.errors import InvalidRequest
from mcp_oauthd.oauth.forms import MAX_FORM_BYTES, parse_form
from mcp_oauthd.oauth.metadata import REVOKE_PATH, TOKEN_PATH
from mcp_oauthd.service.token import TokenService
from mcp_oauthd.storage.base import StorageError


async def read_form(request: web.Request) -> dict[str, str]:
    """The parameters of a urlencoded body (``oauth.forms.parse_form``: each at most once,
    RFC 6749 §3.2).

    The body is read and parsed here rather than by ``request.post()``: its multidict and
    second content-type check were ~5% of an introspection (bench/README.md)."""
    if request.content_type != "application/x-www-form-urlencoded":
        raise InvalidRequest("the body must be application/x-www-form-urlencoded")
    length = request.content_length
    if length is not None and length > MAX_FORM_BYTES:
        raise InvalidRequest("the request body is too large")  # not even read
    return parse_form(await request.read(), request.charset)


def token_handler(tokens: TokenService) -> Handler:
    # A closure over the service, as the introspection handler: it reads nothing from
    # `request.app`, so the hot lane may serve it (``add_routes``).
    async def token(request: web.Request) -> web.Response:
        form = await read_form(request)
        creds = client_auth.parse(request.headers.get("Authorization"), form)
        body = await tokens.grant(form, creds)
        # RFC 6749 §5.1: token responses MUST NOT be cached.
        return json_response(body, headers=NO_STORE)

    return token


async def revoke(request: web.Request) -> web.Response:
    form = await read_form(request)
    creds = client_auth.parse(request.headers.get("Authorization"), form)
    await request.app[keys.TOKENS].revoke(form, creds)
    return web.Response(status=200, headers=NO_STORE)


async def healthz(_: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    try:
        await request.app[keys.SERVICES].storage.ping()
    except StorageError:
        return json_response(
            {"status": "unavailable", "storage": "unreachable"},
            status=503,
            headers={"Retry-After": "5"},
        )
    return json_response({"status": "ready", "storage": "ok"})


def add_routes(app: web.Application, prefix: str) -> dict[tuple[str, str], Handler]:
    """Add the routes; return those the hot lane may serve ((method, path) -> handler):
    the token endpoint, a refresh for every access token's lifetime of every client."""
    token = token_handler(app[keys.TOKENS])
    app.router.add_post(prefix + TOKEN_PATH, token)
    app.router.add_post(prefix + REVOKE_PATH, revoke)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return {("POST", prefix + TOKEN_PATH): token}

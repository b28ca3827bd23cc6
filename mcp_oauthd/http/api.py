"""JSON endpoints: token, revocation, health."""

from __future__ import annotations

from aiohttp import web

from mcp_oauthd.http import keys
from mcp_oauthd.http.responses import NO_STORE, json_response
from mcp_oauthd.oauth import client_auth
from mcp_oauthd.oauth.errors import InvalidRequest
from mcp_oauthd.oauth.metadata import REVOKE_PATH, TOKEN_PATH
from mcp_oauthd.storage.base import StorageError

_MAX_FORM = 64 * 1024


async def read_form(request: web.Request) -> dict[str, str]:
    """A urlencoded body with each parameter at most once (RFC 6749 §3.2)."""
    if request.content_type != "application/x-www-form-urlencoded":
        raise InvalidRequest("the body must be application/x-www-form-urlencoded")
    if request.content_length is not None and request.content_length > _MAX_FORM:
        raise InvalidRequest("the request body is too large")
    try:
        form = await request.post()
    except UnicodeDecodeError:
        raise InvalidRequest("the body is not valid UTF-8") from None
    result: dict[str, str] = {}
    for key, value in form.items():
        if key in result:
            raise InvalidRequest(f"the parameter {key} appears more than once")
        if not isinstance(value, str):
            raise InvalidRequest(f"the parameter {key} must be text")
        result[key] = value
    return result


async def token(request: web.Request) -> web.Response:
    form = await read_form(request)
    creds = client_auth.parse(request.headers.get("Authorization"), form)
    body = await request.app[keys.TOKENS].grant(form, creds)
    # RFC 6749 §5.1: token responses MUST NOT be cached.
    return json_response(body, headers=NO_STORE)


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


def add_routes(app: web.Application, prefix: str) -> None:
    app.router.add_post(prefix + TOKEN_PATH, token)
    app.router.add_post(prefix + REVOKE_PATH, revoke)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)

"""Client registration endpoints: ``POST /oauth/register`` (RFC 7591) and
``GET`` / ``DELETE /oauth/register/{client_id}`` (RFC 7592). Thin: parse, call, render."""

from __future__ import annotations

from aiohttp import web

from mcp_oauthd.http.client_ip import client_ip
from mcp_oauthd.http.responses import NO_STORE, json_response
from mcp_oauthd.oauth.metadata import REGISTER_PATH
from mcp_oauthd.service.registration import RegistrationService, bearer_token

REGISTRATION = web.AppKey("registration", RegistrationService)
# RFC 7591 §3.2.1: responses carry credentials, so they are never cached.


async def register(request: web.Request) -> web.Response:
    service = request.app[REGISTRATION]
    ip = client_ip(request)
    service.admit(bearer_token(request.headers.get("Authorization")), ip)
    # Bounded by the app's client_max_size; parse() refuses (and audits) anything over
    # MAX_BODY_BYTES.
    body = await request.read()
    meta = service.parse(body, request.content_type, ip)
    result = await service.register(meta, ip)
    return json_response(result, status=201, headers=NO_STORE)


async def read_client(request: web.Request) -> web.Response:
    service = request.app[REGISTRATION]
    body = await service.read(
        request.match_info["client_id"],
        bearer_token(request.headers.get("Authorization")),
        client_ip(request),
    )
    return json_response(body, headers=NO_STORE)


async def delete_client(request: web.Request) -> web.Response:
    service = request.app[REGISTRATION]
    await service.delete(
        request.match_info["client_id"],
        bearer_token(request.headers.get("Authorization")),
        client_ip(request),
    )
    return web.Response(status=204, headers=NO_STORE)


def add_routes(app: web.Application, prefix: str, service: RegistrationService) -> None:
    app[REGISTRATION] = service
    app.router.add_post(prefix + REGISTER_PATH, register)
    app.router.add_get(prefix + REGISTER_PATH + "/{client_id}", read_client)
    app.router.add_delete(prefix + REGISTER_PATH + "/{client_id}", delete_client)

"""Middleware: request id, the one error renderer, security headers, access log.

``error_middleware`` is the only place that turns exceptions into responses: an
``OAuthError`` becomes RFC 6749 JSON, a ``PageError`` an HTML page, storage and upstream
outages a 503 with ``Retry-After``, and anything else a 500 with no detail (the
traceback goes to the log, never to the client).
"""

from __future__ import annotations

import itertools
import re
import secrets
import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from mcp_oauthd.http import keys
from mcp_oauthd.oauth.errors import (
    InvalidRequest,
    OAuthError,
    ServerError,
    TemporarilyUnavailable,
)
from mcp_oauthd.service.authorize import PageError
from mcp_oauthd.storage.base import StorageError, StorageUnavailable

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
log = structlog.get_logger("mcp_oauthd.http")
access_log = structlog.get_logger("mcp_oauthd.access")

# No script at all on our pages. `form-action` is left out on purpose: a consent or login
# POST ends in a redirect chain to the IdP or the client's redirect URI (any loopback port,
# custom schemes), and browsers apply form-action to every hop of that chain.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'"
)


def json_error(error: OAuthError) -> web.Response:
    response = web.json_response(error.to_dict(), status=error.status)
    response.headers["Cache-Control"] = "no-store"
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    if error.www_authenticate:
        response.headers["WWW-Authenticate"] = error.www_authenticate
    return response


def wants_html(request: web.Request) -> bool:
    return request.path in request.app[keys.HTML_PATHS]


_ID_PREFIX = secrets.token_hex(4)
_ID_COUNTER = itertools.count(1)


def _new_request_id() -> str:
    """Unique, not secret: a random per-process prefix and a counter (no syscall)."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):08x}"


def _is_hot(path: str) -> bool:
    """The resource servers' per-request checks: by far the most frequent requests."""
    return path == "/auth/verify" or path.endswith("/oauth/introspect")


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    incoming = request.headers.get("X-Request-ID", "")
    request_id = incoming if _REQUEST_ID.match(incoming) else _new_request_id()
    request[keys.REQUEST_ID] = request_id
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id)
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        response.headers["X-Request-ID"] = request_id
        return response
    finally:
        logging_config = request.app[keys.SERVICES].config.logging
        if logging_config.access_log and (
            status >= 400 or logging_config.access_log_hot_paths or not _is_hot(request.path)
        ):
            access_log.info(
                "request",
                method=request.method,
                path=request.path,  # never the query string: it may carry a code
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
            )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    pages = request.app[keys.PAGES]
    try:
        return await handler(request)
    except PageError as exc:
        return pages.error(exc.title, exc.message, exc.status, request.get(keys.REQUEST_ID))
    except OAuthError as exc:
        if wants_html(request):
            page = pages.error("Something went wrong", exc.description or exc.error, exc.status)
            if exc.retry_after is not None:
                page.headers["Retry-After"] = str(exc.retry_after)
            return page
        return json_error(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if wants_html(request):
            return pages.error(exc.reason, "This page does not exist.", exc.status)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "invalid_request")
        response = web.json_response(
            {"error": code, "error_description": exc.reason}, status=exc.status
        )
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except StorageUnavailable:
        log.warning("storage unavailable", path=request.path)
        error: OAuthError = TemporarilyUnavailable("the service is temporarily unavailable")
        if wants_html(request):
            response = pages.error(
                "Temporarily unavailable", "Please try again in a few seconds.", 503
            )
            response.headers["Retry-After"] = "5"
            return response
        return json_error(error)
    except StorageError:
        log.exception("storage error", path=request.path)
        return json_error(ServerError("internal error"))
    except ConnectionResetError:
        # The client went away mid-request (e.g. while sending its body): nothing failed
        # here and nobody will read an answer, so no traceback in the log.
        log.debug("client disconnected", path=request.path)
        return json_error(InvalidRequest("the connection was closed"))
    except Exception:
        log.exception("unhandled error", path=request.path)
        if wants_html(request):
            return pages.error("Something went wrong", "An internal error occurred.", 500)
        return json_error(ServerError("internal error"))


def security_headers_middleware(https: bool) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        headers = response.headers
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("Referrer-Policy", "no-referrer")
        headers.setdefault("Content-Security-Policy", CSP)
        if https:
            headers.setdefault("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
        return response

    return middleware

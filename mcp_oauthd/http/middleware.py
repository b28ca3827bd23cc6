"""The request pipeline: request id, metrics, tracing, the one error renderer, rate
limits, security headers, access log — one middleware (:func:`pipeline`).

:func:`render_error` is the only place that turns exceptions into responses: an
``OAuthError`` becomes RFC 6749 JSON, a ``PageError`` an HTML page, storage and upstream
outages a 503 with ``Retry-After``, and anything else a 500 with no detail (the
traceback goes to the log, never to the client).
"""

from __future__ import annotations

import functools
import itertools
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import structlog
from aiohttp import web
from aiohttp.hdrs import EXPECT
from aiohttp.typedefs import Middleware

from mcp_oauthd.http import keys
from mcp_oauthd.http.keys import LaneWrapper, RequestHandlerFn
from mcp_oauthd.http.pages import Pages
from mcp_oauthd.http.responses import (
    HSTS,
    SECURITY_HEADERS,
    SECURITY_MARKER,
    json_response,
)
from mcp_oauthd.oauth.errors import (
    InvalidRequest,
    OAuthError,
    ServerError,
    TemporarilyUnavailable,
)
from mcp_oauthd.service.authorize import PageError
from mcp_oauthd.storage.base import StorageError, StorageUnavailable

if TYPE_CHECKING:
    from mcp_oauthd.http.ratelimit import RateLimitGate
    from mcp_oauthd.observability.metrics import Metrics
    from mcp_oauthd.observability.tracing import Tracing
    from mcp_oauthd.service.context import Services

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
log = structlog.get_logger("mcp_oauthd.http")
access_log = structlog.get_logger("mcp_oauthd.access")


def json_error(error: OAuthError) -> web.Response:
    response = json_response(error.to_dict(), status=error.status)
    response.headers["Cache-Control"] = "no-store"
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    if error.www_authenticate:
        response.headers["WWW-Authenticate"] = error.www_authenticate
    return response


def wants_html(request: web.Request, html_paths: frozenset[str]) -> bool:
    return request.path in html_paths


_ID_PREFIX = secrets.token_hex(4)
_ID_COUNTER = itertools.count(1)


def _new_request_id() -> str:
    """Unique, not secret: a random per-process prefix and a counter (no syscall)."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):08x}"


def _is_hot(path: str) -> bool:
    """The resource servers' per-request checks: by far the most frequent requests."""
    return path == "/auth/verify" or path.endswith("/oauth/introspect")


def render_error(
    request: web.Request, exc: Exception, pages: Pages, html_paths: frozenset[str]
) -> web.StreamResponse | None:
    """The one error renderer: the response for an exception a handler raised, or None
    for a redirect (an ``HTTPException`` below 400) that must propagate as it is. (It
    reads nothing from ``request.app``: the hot lane's requests have no matched app.)"""
    if isinstance(exc, PageError):
        return pages.error(exc.title, exc.message, exc.status, request.get(keys.REQUEST_ID))
    if isinstance(exc, OAuthError):
        if wants_html(request, html_paths):
            page = pages.error("Something went wrong", exc.description or exc.error, exc.status)
            if exc.retry_after is not None:
                page.headers["Retry-After"] = str(exc.retry_after)
            return page
        return json_error(exc)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            return None
        if wants_html(request, html_paths):
            return pages.error(exc.reason, "This page does not exist.", exc.status)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "invalid_request")
        response = json_response(
            {"error": code, "error_description": exc.reason}, status=exc.status
        )
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    if isinstance(exc, StorageUnavailable):
        log.warning("storage unavailable", path=request.path)
        if wants_html(request, html_paths):
            response = pages.error(
                "Temporarily unavailable", "Please try again in a few seconds.", 503
            )
            response.headers["Retry-After"] = "5"
            return response
        return json_error(TemporarilyUnavailable("the service is temporarily unavailable"))
    if isinstance(exc, StorageError):
        log.exception("storage error", path=request.path)
        return json_error(ServerError("internal error"))
    if isinstance(exc, ConnectionResetError):
        # The client went away mid-request (e.g. while sending its body): nothing failed
        # here and nobody will read an answer, so no traceback in the log.
        log.debug("client disconnected", path=request.path)
        return json_error(InvalidRequest("the connection was closed"))
    log.exception("unhandled error", path=request.path)
    if wants_html(request, html_paths):
        return pages.error("Something went wrong", "An internal error occurred.", 500)
    return json_error(ServerError("internal error"))


def install_hot_lane(app: web.Application, server: web.Server) -> None:
    """Put the app's hot lane (:meth:`Pipeline.lane`) in front of ``server``: call it on
    every runner serving the app, after ``runner.setup()``."""
    wrap = app.get(keys.HOT_LANE)
    if wrap is not None:
        server.request_handler = wrap(server.request_handler)


@dataclass(frozen=True)
class Pipeline:
    """The request pipeline (:func:`pipeline`): as the app's one middleware, and as the
    hot lane the resource servers' per-request checks take (:meth:`lane`)."""

    middleware: Middleware
    #: ``run(request, handler, route, hot)``: the pipeline around ``handler``; ``route``
    #: keys the metrics labels (the matched route, or the path for the hot lane); ``hot``:
    #: a resource server's per-request check (kept out of the access log unless asked).
    run: Callable[[web.Request, Handler, object, bool], Awaitable[web.StreamResponse]]
    tracing: bool

    def lane(self, routes: Mapping[tuple[str, str], Handler]) -> LaneWrapper:
        """Wrap aiohttp's request entry point so that ``routes`` ((method, exact path) ->
        handler) run the same pipeline without aiohttp's router and middleware chain.

        Introspection and ``/auth/verify`` are one request per request to every protected
        MCP server, and the token endpoint one per access-token lifetime of every client;
        routing them through ``Application._handle`` (URL resolution, the middleware chain
        aiohttp builds around every handler, the per-app wrapper it adds) cost ~29k of the
        ~400k instructions of an introspection (bench/README.md). Their paths are exact
        strings, and their handlers read nothing from ``request.app`` or
        ``request.match_info`` (a route with CORS is left out by the caller: aiohttp-cors
        works through the router). Every other request, and any with ``Expect``
        (100-continue is the app's business), takes the normal way. With tracing on,
        everything takes the normal way (the span wraps the pipeline there)."""
        run = self.run

        def wrap(normal: RequestHandlerFn) -> RequestHandlerFn:
            if self.tracing or not routes:
                return normal

            async def handle(request: web.BaseRequest) -> web.StreamResponse:
                path = request.path
                handler = routes.get((request.method, path))
                if handler is None or EXPECT in request.headers:
                    return await normal(request)
                # The app's request factory made it: a web.Request, without a match.
                return await run(cast(web.Request, request), handler, path, _is_hot(path))

            return handle

        return wrap


def pipeline(
    services: Services,
    *,
    https: bool,
    rate_limits: RateLimitGate | None,
    metrics: Metrics | None,
    tracing: Tracing | None,
    pages: Pages,
    html_paths: frozenset[str],
) -> Pipeline:
    """The request pipeline, as ONE middleware: every request passes it, and
    introspection and ``/auth/verify`` (one per request to every protected MCP server)
    are most of them, so each step is inline rather than a middleware of its own (each
    aiohttp middleware layer costs a wrapper and a coroutine frame per request).

    In order: request id (bound to the log context) -> metrics -> tracing span (when on)
    -> the error renderer -> rate limit -> handler; then security headers, the request id
    header and the access log on the way out, whatever the outcome.
    """
    observe = metrics.http_observer() if metrics is not None else None
    started_metric = metrics.http_started if metrics is not None else None
    # structlog's own context variable for `request_id` (bind_contextvars hands back its
    # token): setting it directly is what bind_contextvars does, minus the dict work.
    request_id_var = structlog.contextvars.bind_contextvars(request_id=None)["request_id"].var
    structlog.contextvars.unbind_contextvars("request_id")

    async def rendered(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            if rate_limits is not None:
                await rate_limits.check(request, now())
            return await handler(request)
        except Exception as exc:
            response = render_error(request, exc, pages, html_paths)
            if response is None:
                raise
            return response

    # Bound once: the clock object lives as long as the services (it is never replaced).
    now = services.clock.now

    async def run(
        request: web.Request, handler: Handler, route: object, hot: bool
    ) -> web.StreamResponse:
        incoming = request.headers.get("X-Request-ID")
        request_id = (
            incoming if incoming is not None and _REQUEST_ID.match(incoming) else _new_request_id()
        )
        request[keys.REQUEST_ID] = request_id
        # Each request runs in its own asyncio task with a copy of the connection's
        # context, so what is bound here never leaks into another request's log lines.
        request_id_var.set(request_id)
        started = time.perf_counter()
        if started_metric is not None:
            started_metric()
        status = 500
        try:
            if tracing is not None:
                response = await tracing.around(
                    request, functools.partial(rendered, handler=handler)
                )
            else:  # `rendered` inlined: one coroutine frame less on every request
                try:
                    if rate_limits is not None:
                        rule = rate_limits.take(request, now())
                        if rule is not None:
                            await rate_limits.check_shared(request, rule)
                    response = await handler(request)
                except Exception as exc:
                    error_response = render_error(request, exc, pages, html_paths)
                    if error_response is None:
                        raise
                    response = error_response
            status = response.status
            headers = response.headers
            if SECURITY_MARKER not in headers:  # JSON responses are built with them
                headers.extend(SECURITY_HEADERS)
            if https:
                headers[HSTS[0]] = HSTS[1]
            headers["X-Request-ID"] = request_id
            return response
        except web.HTTPException as exc:  # a redirect raised by a handler
            status = exc.status
            raise
        finally:
            elapsed = time.perf_counter() - started
            if observe is not None:
                observe(route, request, status, elapsed)
            logging_config = services.config.logging
            if logging_config.access_log and (
                status >= 400 or not hot or logging_config.access_log_hot_paths
            ):
                access_log.info(
                    "request",
                    method=request.method,
                    path=request.path,  # never the query string: it may carry a code
                    status=status,
                    duration_ms=round(elapsed * 1000, 2),
                )

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await run(request, handler, request.match_info.route, _is_hot(request.path))

    return Pipeline(middleware=middleware, run=run, tracing=tracing is not None)

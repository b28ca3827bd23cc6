"""Typed application and request keys."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from mcp_oauthd.config.models import Config
from mcp_oauthd.http.pages import Pages
from mcp_oauthd.security.ratelimit import RateLimiter
from mcp_oauthd.service.authorize import AuthorizeService
from mcp_oauthd.service.context import Services
from mcp_oauthd.service.token import TokenService

CONFIG = web.AppKey("config", Config)
SERVICES = web.AppKey("services", Services)
AUTHORIZE = web.AppKey("authorize", AuthorizeService)
TOKENS = web.AppKey("tokens", TokenService)
PAGES = web.AppKey("pages", Pages)
HTML_PATHS = web.AppKey("html_paths", frozenset[str])
REQUEST_ID = web.RequestKey("request_id", str)
RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)

#: aiohttp's per-request entry point (``web.Server.request_handler``), and a wrapper of it.
RequestHandlerFn = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
LaneWrapper = Callable[[RequestHandlerFn], RequestHandlerFn]
#: Wraps the server's entry point with the hot lane (``http.middleware.install_hot_lane``).
HOT_LANE: web.AppKey[LaneWrapper] = web.AppKey("hot_lane")

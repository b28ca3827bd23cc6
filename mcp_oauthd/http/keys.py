"""Typed application and request keys."""

from __future__ import annotations

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

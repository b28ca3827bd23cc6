"""Run an mcp-oauthd app on a real loopback port inside a test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from mcp_oauthd.http.middleware import install_hot_lane


@asynccontextmanager
async def running(app: web.Application, port: int, host: str = "127.0.0.1") -> AsyncIterator[str]:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
    await runner.setup()
    assert runner.server is not None
    install_hot_lane(app, runner.server)  # the hot routes skip the router (http/middleware)
    site = web.TCPSite(runner, host, port)
    await site.start()
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()

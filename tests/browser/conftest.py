"""Headless Chromium (Debian's ``chromium``) driven by Playwright, against a real daemon.

Playwright's own browser downloads are never used: the browser is the system Chromium
that ``scripts/test`` installs. Every page records its console messages and uncaught
errors, so a test can assert that the Content-Security-Policy blocked nothing.

Without Chromium or Playwright the tests are skipped with a reason, except under CI
(``CI`` set), where ``scripts/test`` has installed both and a skip would hide a failure.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from mcp_oauthd.app import create_app
from mcp_oauthd.clock import FakeClock
from mcp_oauthd.security.audit import Auditor
from mcp_oauthd.storage.memory import MemoryStorage
from mcp_oauthd.testing.daemon import running
from tests.conftest import base_config
from tests.daemon import Daemon

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NARROW = {"width": 360, "height": 740}


def _missing() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install -e '.[test]')"
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        return "Debian's chromium is not installed (apt-get install chromium)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _missing()
    if reason is None or os.environ.get("CI"):
        return
    for item in items:
        if "tests/browser/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.skip(reason=reason))


@dataclass
class PageLog:
    """What a page told its console, the errors it threw and the sub-resources (styles,
    icons) that failed to load. A page's own 4xx (an error page) is not a failure."""

    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    failed_loads: list[str] = field(default_factory=list)

    def csp_violations(self) -> list[str]:
        return [m for m in self.console if "Content Security Policy" in m or "Refused to" in m]

    def problems(self, document_status: int = 200) -> list[str]:
        """CSP violations, console errors, script errors and failed sub-resource loads
        (e.g. a favicon 404). Chromium also logs a document's own 4xx as a failed load:
        that one line is expected on an error page (the test asserts the status)."""
        own = f"Failed to load resource: the server responded with a status of {document_status} "
        console_errors = [m for m in self.console if m.startswith("error:") and own not in m]
        return [*self.csp_violations(), *console_errors, *self.errors, *self.failed_loads]


# One Chromium for the whole session (starting one costs ~1.5 s); each test gets a fresh
# context (its own cookies). The browser lives on the session event loop, so the tests
# here (``pytestmark`` in each module) and the async fixtures they use run on it too.
@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def chromium() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium"),
            args=CHROMIUM_ARGS,
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest_asyncio.fixture(loop_scope="session")
async def page(chromium: Any) -> AsyncIterator[tuple[Any, PageLog]]:
    """A fresh browser context (own cookies) at a phone's width, with its console log."""
    context = await chromium.new_context(viewport=NARROW, java_script_enabled=True)
    page = await context.new_page()
    log = PageLog()
    page.on("console", lambda message: log.console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: log.errors.append(str(error)))

    def on_response(response: Any) -> None:
        if response.status >= 400 and response.request.resource_type != "document":
            log.failed_loads.append(f"{response.status} {response.url}")

    page.on("response", on_response)
    try:
        yield page, log
    finally:
        await context.close()


# The daemon fixtures of tests/daemon.py, on the session loop (an async fixture runs on the
# loop of its own loop_scope; the daemon must serve on the loop the test awaits on).
@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


@pytest_asyncio.fixture(loop_scope="session")
async def daemon(port: int, http: aiohttp.ClientSession) -> AsyncIterator[Daemon]:
    config = base_config(port)
    storage, clock, auditor = MemoryStorage(), FakeClock(), Auditor()
    app = create_app(config, storage=storage, clock=clock, auditor=auditor)
    async with running(app, port) as url:
        yield Daemon(url, config, storage, clock, auditor, http)

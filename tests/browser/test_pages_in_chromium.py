"""The login, consent, error and hand-off pages in a real browser (headless Chromium).

A person clicks (or only types) through consent and login to the client's redirect URI;
nothing listens there, so the test intercepts that navigation and reads the code from it.
Every page must work with the CSP on (no violation in the console), label its inputs,
carry a sensible title and fit a 360 px wide screen without sideways scrolling.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from mcp_oauthd.oauth.pkce import new_pair
from mcp_oauthd.testing import flow
from tests.browser.conftest import PageLog
from tests.conftest import DEMO_PASSWORD
from tests.daemon import Daemon

pytestmark = pytest.mark.asyncio(loop_scope="session")

CLIENT_REDIRECT = flow.DEFAULT_REDIRECT  # http://127.0.0.1:5555/callback: nothing listens
CURSOR_REDIRECT = "cursor://anysphere.cursor-retrieval/oauth/callback"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ClientRedirect:
    """Catches the browser's navigation to the client's redirect URI and answers it."""

    def __init__(self) -> None:
        self.arrived: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def install(self, page: Any) -> None:
        async def handle(route: Any) -> None:
            if not self.arrived.done():
                self.arrived.set_result(route.request.url)
            await route.fulfill(status=200, content_type="text/plain", body="client reached")

        await page.route(CLIENT_REDIRECT.rsplit("/", 1)[0] + "/**", handle)

    async def query(self) -> dict[str, str]:
        url = await asyncio.wait_for(self.arrived, 20)
        return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


async def check_page(page: Any, log: PageLog, title_words: str, status: int = 200) -> None:
    """The checks every page passes: title, labels, narrow screen, CSP, no script error."""
    title = await page.title()
    assert title_words in title, title
    assert title.endswith("mcp-oauthd"), title
    unlabelled = await page.evaluate(
        """() => Array.from(document.querySelectorAll(
                'input:not([type=hidden]), select, textarea'))
            .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
            .map(el => el.name || el.id || el.outerHTML)"""
    )
    assert unlabelled == []
    nameless = await page.evaluate(
        """() => Array.from(document.querySelectorAll('button, a'))
            .filter(el => !el.textContent.trim() && !el.getAttribute('aria-label'))
            .map(el => el.outerHTML)"""
    )
    assert nameless == []
    assert await page.evaluate("() => document.documentElement.lang") == "en"
    width = await page.evaluate("() => document.scrollingElement.scrollWidth")
    assert width <= 360, f"the page scrolls sideways on a 360 px screen ({width} px wide)"
    assert log.csp_violations() == []
    assert log.problems(status) == []


async def open_authorize(page: Any, daemon: Daemon, **params: str) -> str:
    verifier, challenge = new_pair()
    response = await page.goto(flow.authorize_url(daemon.url, code_challenge=challenge, **params))
    assert response is not None and response.status == 200
    return verifier


async def exchange(daemon: Daemon, code: str, verifier: str, **params: str) -> dict[str, Any]:
    status, body, _ = await daemon.token(
        {
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "client_id": params.get("client_id", "cli"),
            "redirect_uri": params.get("redirect_uri", CLIENT_REDIRECT),
        }
    )
    assert status == 200, body
    return dict(body)


async def test_a_person_clicks_through_consent_and_login_to_the_client(
    daemon: Daemon, page: tuple[Any, PageLog], tmp_path: Path
) -> None:
    tab, log = page
    client = ClientRedirect()
    await client.install(tab)
    verifier = await open_authorize(tab, daemon)

    await check_page(tab, log, "Authorize Test CLI")
    assert (
        await tab.get_by_role("heading", level=1).inner_text() == "Test CLI wants to access Files"
    )
    assert await tab.get_by_text("files:read").is_visible()
    shot = tmp_path / "consent-360.png"
    await tab.screenshot(path=str(shot), full_page=True)
    data = shot.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 2000

    await tab.get_by_role("button", name="Allow").click()
    await tab.wait_for_selector("input[name=password]")
    await check_page(tab, log, "Sign in")
    await tab.get_by_label("Username").fill("alice")
    await tab.get_by_label("Password").fill(DEMO_PASSWORD)
    await tab.get_by_role("button", name="Sign in").click()

    query = await client.query()
    assert query["state"] == "client-state-123"
    assert query["iss"] == daemon.url
    tokens = await exchange(daemon, query["code"], verifier)
    assert tokens["access_token"].startswith("mcpat_")
    assert log.problems() == []


async def tab_to(tab: Any, selector: str, limit: int = 15) -> None:
    """Press Tab until the element matching ``selector`` has the focus."""
    for _ in range(limit):
        if await tab.evaluate("(s) => document.activeElement?.matches(s) ?? false", selector):
            return
        await tab.keyboard.press("Tab")
    raise AssertionError(f"Tab never reached {selector}")


async def test_the_whole_flow_completes_with_the_keyboard_alone(
    daemon: Daemon, page: tuple[Any, PageLog]
) -> None:
    tab, log = page
    client = ClientRedirect()
    await client.install(tab)
    verifier = await open_authorize(tab, daemon)

    await tab_to(tab, "button[value=approve]")
    async with tab.expect_navigation():
        await tab.keyboard.press("Enter")
    await tab.wait_for_selector("input[name=password]")
    await tab_to(tab, "#username")
    await tab.keyboard.type("alice")
    await tab.keyboard.press("Tab")
    assert await tab.evaluate("() => document.activeElement.id") == "password"
    await tab.keyboard.type(DEMO_PASSWORD)
    await tab.keyboard.press("Enter")

    query = await client.query()
    await exchange(daemon, query["code"], verifier)
    assert log.problems() == []


async def test_the_focus_is_visible_on_every_control(
    daemon: Daemon, page: tuple[Any, PageLog]
) -> None:
    tab, _ = page
    await open_authorize(tab, daemon)
    for selector in ("input[name=remember]", "button[value=deny]", "button[value=approve]"):
        await tab_to(tab, selector)
        outline = await tab.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
        assert outline not in ("none", ""), selector


async def test_a_denied_consent_returns_access_denied_to_the_client(
    daemon: Daemon, page: tuple[Any, PageLog]
) -> None:
    tab, log = page
    client = ClientRedirect()
    await client.install(tab)
    await open_authorize(tab, daemon)
    await tab.get_by_role("button", name="Deny").click()
    query = await client.query()
    assert query["error"] == "access_denied"
    assert query["state"] == "client-state-123"
    assert query["iss"] == daemon.url
    assert "code" not in query
    assert log.csp_violations() == []


async def test_an_expired_flow_shows_a_clear_page_and_never_reaches_the_client(
    daemon: Daemon, page: tuple[Any, PageLog]
) -> None:
    tab, log = page
    client = ClientRedirect()
    await client.install(tab)
    await open_authorize(tab, daemon)
    daemon.clock.advance(daemon.config.tokens.flow_ttl + 1)
    async with tab.expect_navigation() as navigation:
        await tab.get_by_role("button", name="Allow").click()
    response = await navigation.value
    assert response.status in (400, 410)
    await check_page(tab, log, "expired", response.status)
    assert "start again" in (await tab.inner_text("main"))
    assert not client.arrived.done()


async def test_a_sign_in_that_expired_on_the_login_form_says_so(
    daemon: Daemon, page: tuple[Any, PageLog]
) -> None:
    tab, log = page
    await open_authorize(tab, daemon)
    await tab.get_by_role("button", name="Allow").click()
    await tab.wait_for_selector("input[name=password]")
    daemon.clock.advance(daemon.config.tokens.flow_ttl + 1)
    await tab.get_by_label("Username").fill("alice")
    await tab.get_by_label("Password").fill(DEMO_PASSWORD)
    async with tab.expect_navigation() as navigation:
        await tab.get_by_role("button", name="Sign in").click()
    response = await navigation.value
    assert response.status == 400
    await check_page(tab, log, "expired", response.status)


async def test_a_wrong_password_is_announced_next_to_the_form(
    daemon: Daemon, page: tuple[Any, PageLog]
) -> None:
    tab, log = page
    await open_authorize(tab, daemon)
    await tab.get_by_role("button", name="Allow").click()
    await tab.wait_for_selector("input[name=password]")
    await tab.get_by_label("Username").fill("alice")
    await tab.get_by_label("Password").fill("not the password")
    async with tab.expect_navigation() as navigation:
        await tab.get_by_role("button", name="Sign in").click()
    assert (await navigation.value).status == 401
    await check_page(tab, log, "Sign in", 401)
    assert await tab.get_by_role("alert").inner_text() == "Wrong username or password."
    assert await tab.get_by_label("Username").input_value() == "alice"
    assert await tab.get_by_label("Password").input_value() == ""


async def test_the_error_page_explains_an_unknown_client(
    daemon: Daemon, page: tuple[Any, PageLog]
) -> None:
    tab, log = page
    response = await tab.goto(flow.authorize_url(daemon.url, client_id="no-such-client"))
    assert response is not None and response.status == 400
    heading = await tab.get_by_role("heading", level=1).inner_text()
    assert heading.strip()
    # The title names the problem the page explains, not just the product.
    await check_page(tab, log, heading, 400)
    assert (await tab.title()).startswith(heading)


async def test_a_custom_scheme_client_gets_a_hand_off_page_with_its_code(
    daemon: Daemon, page: tuple[Any, PageLog]
) -> None:
    tab, log = page
    params = {"client_id": "ide", "redirect_uri": CURSOR_REDIRECT}
    verifier = await open_authorize(tab, daemon, **params)
    await check_page(tab, log, "Authorize IDE")
    await tab.get_by_role("button", name="Allow").click()
    await tab.wait_for_selector("input[name=password]")
    await tab.get_by_label("Username").fill("alice")
    await tab.get_by_label("Password").fill(DEMO_PASSWORD)
    await tab.get_by_role("button", name="Sign in").click()
    link = tab.get_by_role("link", name="Open the application")
    await link.wait_for()

    await check_page(tab, log, "Return to the application")
    href = await link.get_attribute("href")
    assert href is not None and href.startswith(CURSOR_REDIRECT + "?")
    query = {k: v[0] for k, v in parse_qs(urlsplit(href).query).items()}
    assert query["state"] == "client-state-123"
    await exchange(daemon, query["code"], verifier, **params)


async def test_long_unbroken_names_still_fit_a_narrow_screen(
    daemon: Daemon, page: tuple[Any, PageLog]
) -> None:
    tab, log = page
    name = "SupercalifragilisticexpialidociousEnterpriseConnector0123456789"
    redirect = "http://127.0.0.1:7777/" + "callback" * 12
    async with daemon.http.post(
        daemon.url + "/oauth/register",
        json={
            "client_name": name,
            "redirect_uris": [redirect],
            "token_endpoint_auth_method": "none",
        },
    ) as resp:
        assert resp.status == 201, await resp.text()
        client_id = (await resp.json())["client_id"]
    await open_authorize(tab, daemon, client_id=client_id, redirect_uri=redirect)
    await check_page(tab, log, "Authorize")
    assert name in await tab.inner_text("h1")

"""MCP security best practices: confused deputy. The daemon fronts the upstream IdP with
one fixed client id, so an IdP session or a consent given to one MCP client must never
let another client get tokens: every client gets its own consent, *before* the user is
sent upstream, and the consent page names who is asking."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from mcp_oauthd.config.loader import check_warnings
from mcp_oauthd.oauth.pkce import new_pair
from mcp_oauthd.testing.browser import form_fields
from mcp_oauthd.testing.fake_idp import FakeOidcProvider
from tests.conftest import base_config
from tests.daemon import Daemon
from tests.resource.conftest import oidc_provider


@pytest.fixture
async def idp() -> AsyncIterator[FakeOidcProvider]:
    async with FakeOidcProvider() as fake:
        yield fake


async def test_no_request_reaches_the_idp_before_the_user_consents(
    daemon_factory: Any, idp: FakeOidcProvider
) -> None:
    """The attack: a malicious client rides the user's existing IdP session (the IdP
    auto-approves our fixed client id). Consent for *that* client comes first."""
    daemon: Daemon = await daemon_factory(provider=oidc_provider(idp))
    idp.clock = daemon.clock
    browser = daemon.browser()
    hop = await browser.get(await daemon.authorize_url(code_challenge=new_pair()[1]))
    assert hop.status == 200 and 'name="decision"' in hop.text
    assert idp.requests_to("/authorize") == []
    action, fields = form_fields(hop.text)
    fields["decision"] = "deny"
    hop = await browser.post(action, fields)
    assert "error=access_denied" in (hop.location or "")
    assert idp.requests_to("/authorize") == []  # a denial never goes upstream either


async def test_consent_remembered_for_one_client_does_not_cover_another(daemon: Daemon) -> None:
    """Remembered approvals are per (user, client, resource, scopes): a second client in
    the same browser, right after the first one's login, still sees the consent page."""
    hop, _ = await daemon.login()
    assert "code=" in (hop.location or "")
    again = await daemon.browser().get(await daemon.authorize_url(code_challenge=new_pair()[1]))
    assert again.status in (302, 303)  # the same client: remembered, straight on
    other = await daemon.browser().get(
        await daemon.authorize_url(
            client_id="webapp",
            redirect_uri="https://app.example.com/cb",
            code_challenge=new_pair()[1],
        )
    )
    assert other.status == 200 and 'name="decision"' in other.text


async def test_a_registered_client_cannot_borrow_a_trusted_clients_name(daemon: Daemon) -> None:
    """A dynamic client calling itself "Test CLI" gets its own consent, which says the
    name is self-declared and shows where the code will go."""
    await daemon.login()  # alice approved the real "Test CLI"
    async with daemon.http.post(
        daemon.url + "/oauth/register",
        json={"client_name": "Test CLI", "redirect_uris": ["https://attacker.example/cb"]},
    ) as resp:
        client_id = (await resp.json())["client_id"]
    hop = await daemon.browser().get(
        await daemon.authorize_url(
            client_id=client_id,
            redirect_uri="https://attacker.example/cb",
            code_challenge=new_pair()[1],
        )
    )
    assert hop.status == 200 and 'name="decision"' in hop.text
    assert "attacker.example" in hop.text
    assert "not verified" in hop.text


def test_disabling_consent_is_reported_as_a_confused_deputy_risk() -> None:
    """Confused deputy: turning the defence off is a check-config warning."""
    config = base_config(8080, consent={"enabled": False})
    warning = next(w for w in check_warnings(config) if w.field == "consent.enabled")
    assert "confused deputy" in warning.risk

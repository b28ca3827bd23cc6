"""The credential scan: a whole flow-suite scenario with every output captured (all log
lines at debug level, the audit events, /metrics, every span and its attributes), then a
search of all of it for every credential the run issued or used. None may appear."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import structlog
from opentelemetry.sdk.trace import ReadableSpan

from mcp_oauthd.config.models import LoggingConfig
from mcp_oauthd.observability.logging import configure_logging
from mcp_oauthd.testing import flow
from mcp_oauthd.testing.browser import ScriptedBrowser, form_fields, query_of
from mcp_oauthd.testing.fake_idp import FakeOidcProvider
from tests.conftest import DEMO_PASSWORD
from tests.observability.conftest import Observed

WEBAPP_SECRET = "s3cret-s3cret-s3cret"
WRONG_PASSWORD = "wrong-horse-battery-Zq81x"
WRONG_SECRET = "not-the-webapp-secret-Zq81x"
CLI = "http://127.0.0.1:5555/callback"
WEBAPP = "https://app.example.com/cb"


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    configure_logging(LoggingConfig(level="debug", format="json"), stream=stream)
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


class Secrets:
    """Every credential value the scenario saw, in whichever direction."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def add(self, what: str, value: str | None) -> None:
        assert value, what
        self.values[f"{what} #{len(self.values)}"] = value

    def from_browser(self, browser: ScriptedBrowser) -> None:
        """Codes in every redirect (ours and the local IdP's), CSRF tokens in every form."""
        for hop in browser.history:
            if hop.location:
                code = query_of(hop.location).get("code")
                if code:
                    self.add("authorization code", code)
            if 'name="csrf_token"' in hop.text:
                self.add("csrf token", form_fields(hop.text)[1]["csrf_token"])

    def from_tokens(self, body: dict[str, Any]) -> None:
        self.add("access token", body["access_token"])
        if "refresh_token" in body:
            self.add("refresh token", body["refresh_token"])

    def from_cookies(self, jar: aiohttp.abc.AbstractCookieJar) -> None:
        for cookie in jar:
            self.add(f"cookie {cookie.key}", cookie.value)


def span_text(span: ReadableSpan) -> str:
    return json.dumps(
        {
            "name": span.name,
            "attributes": dict(span.attributes or {}),
            "events": [(e.name, dict(e.attributes or {})) for e in span.events],
            "links": [dict(link.attributes or {}) for link in span.links],
            "status": span.status.description,
            "resource": dict(span.resource.attributes),
        },
        default=str,
    )


async def login(observed: Observed, secrets: Secrets, **params: str) -> flow.FlowResult:
    result = await flow.login(
        observed.daemon.http,
        observed.url,
        username="alice",
        password=DEMO_PASSWORD,
        **params,
    )
    secrets.add("pkce verifier", result.verifier)
    secrets.from_browser(result.browser)
    return result


async def test_no_log_line_audit_event_metric_or_span_holds_a_credential_of_the_run(
    observed: Observed, log_stream: io.StringIO
) -> None:
    daemon = observed.daemon
    secrets = Secrets()
    secrets.add("password", DEMO_PASSWORD)
    secrets.add("client secret", WEBAPP_SECRET)

    # A public client logs in, redeems its code, refreshes, replays, revokes.
    result = await login(observed, secrets)
    code = result.query["code"]
    exchange = {"grant_type": "authorization_code", "code": code, "client_id": "cli"}
    status, body, _ = await daemon.token(
        {**exchange, "code_verifier": result.verifier, "redirect_uri": CLI}
    )
    assert status == 200, body
    secrets.from_tokens(body)
    refresh = {"grant_type": "refresh_token", "client_id": "cli"}
    status, renewed, _ = await daemon.token({**refresh, "refresh_token": body["refresh_token"]})
    assert status == 200, renewed
    secrets.from_tokens(renewed)
    daemon.clock.advance(daemon.config.tokens.refresh_grace_period + 1)
    status, _, _ = await daemon.token({**refresh, "refresh_token": body["refresh_token"]})
    assert status == 400  # refresh replay: the family is revoked
    status, _, _ = await daemon.token({**exchange, "code_verifier": result.verifier})
    assert status == 400  # code replay

    fresh = await daemon.tokens()
    secrets.from_tokens(fresh)
    async with daemon.http.post(
        observed.url + "/oauth/revoke", data={"token": fresh["refresh_token"], "client_id": "cli"}
    ) as resp:
        assert resp.status == 200

    # A wrong PKCE verifier.
    result = await login(observed, secrets)
    status, _, _ = await daemon.token(
        {
            "grant_type": "authorization_code",
            "code": result.query["code"],
            "client_id": "cli",
            "code_verifier": "W" * 43,
        }
    )
    assert status == 400
    secrets.add("wrong pkce verifier", "W" * 43)

    # A failed login with a wrong password.
    failed = await flow.login(daemon.http, observed.url, username="alice", password=WRONG_PASSWORD)
    assert failed.hop.status == 401
    secrets.add("wrong password", WRONG_PASSWORD)
    secrets.from_browser(failed.browser)

    # A confidential client with its secret (basic), then a wrong secret (post).
    result = await login(observed, secrets, client_id="webapp", redirect_uri=WEBAPP)
    status, body, _ = await daemon.token(
        {
            "grant_type": "authorization_code",
            "code": result.query["code"],
            "code_verifier": result.verifier,
            "redirect_uri": WEBAPP,
        },
        auth=aiohttp.BasicAuth("webapp", WEBAPP_SECRET),
    )
    assert status == 200, body
    secrets.from_tokens(body)
    status, _, _ = await daemon.token(
        {
            "grant_type": "refresh_token",
            "refresh_token": body["refresh_token"],
            "client_id": "webapp",
            "client_secret": WRONG_SECRET,
        }
    )
    assert status == 401
    secrets.add("wrong client secret", WRONG_SECRET)
    secrets.from_cookies(daemon.http.cookie_jar)

    metrics = await observed.metrics_text()
    logs = log_stream.getvalue()
    audit = json.dumps(list(daemon.auditor.events), default=str)
    spans = [span_text(s) for s in observed.finished()]

    # The outputs tell the story (so an empty capture cannot pass the scan)...
    events = [json.loads(line)["event"] for line in logs.splitlines()]
    assert "token.issued" in events
    assert "login.failed" in events
    assert "refresh.reused" in audit
    assert "oauth_refresh_reuse_total 1.0" in metrics
    assert "oauth_logins_total" in metrics
    assert any("POST /oauth/token" in s for s in spans)
    assert len(spans) > 50
    assert len(secrets.values) >= 25

    # ...and none of them holds a credential.
    outputs = {"logs": logs, "audit events": audit, "metrics": metrics, "spans": "\n".join(spans)}
    leaks = [
        f"{what} in {where}"
        for what, secret in secrets.values.items()
        for where, text in outputs.items()
        if secret in text
    ]
    assert leaks == []


async def test_no_output_holds_an_upstream_credential_either(
    observed_factory: Any, log_stream: io.StringIO
) -> None:
    async with FakeOidcProvider() as idp:
        observed: Observed = await observed_factory(
            provider={
                "type": "oidc",
                "issuer": idp.issuer,
                "client_id": idp.client_id,
                "client_secret": idp.client_secret,
                "allow_insecure_http": True,
            }
        )
        daemon = observed.daemon
        idp.clock = daemon.clock
        secrets = Secrets()
        result = await login(observed, secrets)
        status, body, _ = await daemon.token(
            {
                "grant_type": "authorization_code",
                "code": result.query["code"],
                "code_verifier": result.verifier,
                "client_id": "cli",
                "redirect_uri": CLI,
            }
        )
        assert status == 200, body
        secrets.from_tokens(body)
        # Near upstream expiry, our refresh renews the upstream tokens first.
        daemon.clock.advance(3600 - daemon.config.tokens.token_refresh_threshold + 1)
        status, renewed, _ = await daemon.token(
            {
                "grant_type": "refresh_token",
                "refresh_token": body["refresh_token"],
                "client_id": "cli",
            }
        )
        assert status == 200, renewed
        secrets.from_tokens(renewed)
        assert len(idp.token_requests) == 2  # the code exchange and the upstream refresh
        assert idp.client_secret is not None
        secrets.add("upstream client secret", idp.client_secret)
        for token in [*idp._access_tokens, *idp._refresh_tokens]:
            secrets.add("upstream token", token)
        for request in idp.token_requests:
            secrets.add("upstream client authentication", request.headers["Authorization"])

        outputs = {
            "logs": log_stream.getvalue(),
            "audit events": json.dumps(list(daemon.auditor.events), default=str),
            "metrics": await observed.metrics_text(),
            "spans": "\n".join(span_text(s) for s in observed.finished()),
        }
    assert "provider.refresh" in outputs["spans"]
    assert 'provider="oidc"' in outputs["metrics"]
    leaks = [
        f"{what} in {where}"
        for what, secret in secrets.values.items()
        for where, text in outputs.items()
        if secret in text
    ]
    assert leaks == []

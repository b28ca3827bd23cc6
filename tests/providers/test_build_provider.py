from __future__ import annotations

import pytest
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import TypeAdapter

from mcp_oauthd.clock import FakeClock
from mcp_oauthd.config.models import ProviderConfig
from mcp_oauthd.providers import (
    GithubProvider,
    GoogleProvider,
    LocalProvider,
    OidcProvider,
    Provider,
    build_provider,
)
from mcp_oauthd.storage.memory import MemoryStorage

CONFIGS = {
    "local": ({"type": "local"}, LocalProvider),
    "oidc": ({"type": "oidc", "issuer": "https://idp.example.com", "client_id": "c"}, OidcProvider),
    "google": ({"type": "google", "client_id": "c", "client_secret": "s"}, GoogleProvider),
    "github": ({"type": "github", "client_id": "c", "client_secret": "s"}, GithubProvider),
}


@pytest.mark.parametrize("kind", list(CONFIGS))
async def test_build_provider_picks_the_provider_of_the_configured_type(
    kind: str, clock: FakeClock
) -> None:
    data, cls = CONFIGS[kind]
    config = TypeAdapter(ProviderConfig).validate_python(data)

    provider = build_provider(
        config, issuer="https://auth.example.com", storage=MemoryStorage(), clock=clock
    )
    try:
        assert type(provider) is cls
        assert provider.name == kind
        assert isinstance(provider, Provider)
    finally:
        await provider.close()


def test_the_login_page_renders_an_accessible_form_without_inline_code() -> None:
    env = Environment(
        loader=FileSystemLoader("mcp_oauthd/http/templates"),
        autoescape=select_autoescape(["html"]),
    )
    html = env.get_template("login.html").render(
        product_name="Acme",
        static_url="/static",
        action="/login",
        state="st<1>",
        csrf_token="csrf",
        error="Wrong username or password.",
        username='al"ice',
        client_name="<Claude>",
    )

    expected = [
        "<title>Sign in · Acme</title>",
        'for="username"',
        'id="username"',
        'for="password"',
        'id="password"',
        'autocomplete="username"',
        'autocomplete="current-password"',
        "autofocus",
        'action="/login"',
        'role="alert"',
        "st&lt;1&gt;",
        "&lt;Claude&gt;",
        "al&#34;ice",
    ]
    for fragment in expected:
        assert fragment in html
    for forbidden in ["<script", "<style", "style=", "<Claude>"]:
        assert forbidden not in html

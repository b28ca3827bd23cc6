"""What is measured: one request shape per scenario (pure; unit-tested).

Single-use values (refresh tokens rotate on use, codes are redeemed once) come from
pre-minted pools walked once (see :mod:`bench.lua`); nothing relies on the refresh grace
window, which would measure the replay path instead of a real rotation.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from urllib.parse import quote

from bench import configs
from bench.baseline import PATH as BASELINE_PATH
from bench.seeding import CODE_VERIFIER

FORM = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    pool: str | None = None  # "access", "refresh", "codes" (pool file stem) or None
    once: bool = False  # single-use pool values
    token_format: str = "opaque"  # which daemon serves it: the opaque or the JWT one
    expect: int = 200
    route: str | None = None  # skip (with a note) if the daemon does not serve this path


def basic(client_id: str, secret: str) -> str:
    raw = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def introspection_headers(seed: str) -> dict[str, str]:
    return {
        "Content-Type": FORM,
        "Authorization": basic(configs.RS_CLIENT_ID, configs.rs_secret(seed)),
    }


def all_scenarios(seed: str) -> list[Scenario]:
    """Every scenario, in the order they run on a daemon (single-use ones last)."""
    introspect = introspection_headers(seed)
    verify = {"Authorization": "Bearer {token}", "X-Original-URI": "/mcp"}
    redirect = quote("http://127.0.0.1:5555/callback", safe="")
    return [
        Scenario(
            "discovery",
            "GET AS metadata (RFC 8414)",
            "GET",
            "/.well-known/oauth-authorization-server",
        ),
        Scenario(
            "introspect-opaque",
            "POST /oauth/introspect, opaque token",
            "POST",
            "/oauth/introspect",
            introspect,
            "token={token}",
            pool="access",
            route="/oauth/introspect",
        ),
        Scenario(
            "verify-opaque",
            "GET /auth/verify, opaque bearer",
            "GET",
            "/auth/verify",
            verify,
            pool="access",
            route="/auth/verify",
        ),
        Scenario(
            "register",
            "POST /oauth/register (new public client each time)",
            "POST",
            "/oauth/register",
            {"Content-Type": "application/json"},
            '{"client_name":"bench-{thread}-{n}","redirect_uris":["http://127.0.0.1/cb"],'
            '"token_endpoint_auth_method":"none","grant_types":["authorization_code",'
            '"refresh_token"],"response_types":["code"]}',
            expect=201,
            route="/oauth/register",
        ),
        Scenario(
            "refresh",
            "POST /oauth/token refresh_token (each token once)",
            "POST",
            "/oauth/token",
            {"Content-Type": FORM},
            f"grant_type=refresh_token&refresh_token={{token}}&client_id={configs.CLIENT_ID}",
            pool="refresh",
            once=True,
        ),
        Scenario(
            "code",
            "POST /oauth/token authorization_code (each code once)",
            "POST",
            "/oauth/token",
            {"Content-Type": FORM},
            f"grant_type=authorization_code&code={{token}}&code_verifier={CODE_VERIFIER}"
            f"&client_id={configs.CLIENT_ID}&redirect_uri={redirect}",
            pool="codes",
            once=True,
        ),
        Scenario(
            "introspect-jwt",
            "POST /oauth/introspect, JWT access token",
            "POST",
            "/oauth/introspect",
            introspect,
            "token={token}",
            pool="access",
            token_format="jwt",
            route="/oauth/introspect",
        ),
        Scenario(
            "verify-jwt",
            "GET /auth/verify, JWT bearer",
            "GET",
            "/auth/verify",
            verify,
            pool="access",
            token_format="jwt",
            route="/auth/verify",
        ),
    ]


def baseline_scenario(seed: str) -> Scenario:
    """The baseline request: the same headers and body shape as opaque introspection."""
    return Scenario(
        "baseline",
        "bare aiohttp: form POST -> fixed JSON",
        "POST",
        BASELINE_PATH,
        introspection_headers(seed),
        "token={token}",
        pool="access",
    )


def scenario_named(seed: str, name: str) -> Scenario:
    for scenario in all_scenarios(seed):
        if scenario.name == name:
            return scenario
    raise KeyError(name)


SCENARIO_NAMES = tuple(s.name for s in all_scenarios("x"))


def fill(template: str, token: str, n: int = 1, thread: int = 1) -> str:
    """The template with its placeholders filled (what the Lua script sends)."""
    return (
        template.replace("{token}", token).replace("{n}", str(n)).replace("{thread}", str(thread))
    )

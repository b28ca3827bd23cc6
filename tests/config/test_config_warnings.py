"""check_warnings: every weakened default is named, with its risk and a fix."""

from __future__ import annotations

from pathlib import Path

from mcp_oauthd.config.loader import ConfigWarning, check_warnings, load_config
from mcp_oauthd.config.models import Config

SOLID = """\
issuer: https://auth.example.com
storage: {{type: sqlite, path: {db}}}
provider:
  type: oidc
  issuer: https://idp.example.com
  client_id: mcp
access_policy: {{allowed_domains: [example.com]}}
security:
  cookie_secret: {{value: 0123456789abcdef0123456789abcdef}}
  encryption_keys:
    - {{id: k1, key: {key}}}
resources:
  - uri: https://mcp.example.com/mcp
"""
KEY = "A" * 43  # 32 zero bytes, base64url without padding


def config_from(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return load_config(path, environ={})


def solid(tmp_path: Path) -> str:
    return SOLID.format(db=tmp_path / "state.db", key=KEY)


def fields(config: Config) -> set[str]:
    return {w.field for w in check_warnings(config)}


def test_a_hardened_config_has_no_warnings(tmp_path: Path) -> None:
    assert check_warnings(config_from(tmp_path, solid(tmp_path))) == []


def test_the_embedded_defaults_warn_about_everything_weak_in_them() -> None:
    assert fields(load_config(None, environ={})) == {
        "issuer",
        "security.encryption_keys",
        "security.cookie_secret",
        "provider.users.0.password_hash",
    }


def test_each_weakened_setting_is_warned_about(tmp_path: Path) -> None:
    text = (
        solid(tmp_path)
        .replace("access_policy: {allowed_domains: [example.com]}", "")
        .replace("storage: {type: sqlite, path: " + str(tmp_path / "state.db") + "}", "")
        + "storage: {type: memory}\n"
        + "consent: {enabled: false}\n"
        + "tokens: {access_token_ttl: 2d, refresh_family_lifetime: 365d}\n"
    ).replace("security:\n", "security:\n  redirect: {allow_http: true}\n")
    assert fields(config_from(tmp_path, text)) == {
        "access_policy",
        "storage.type",
        "consent.enabled",
        "tokens.access_token_ttl",
        "tokens.refresh_family_lifetime",
        "security.redirect.allow_http",
    }


def test_an_http_issuer_listening_beyond_loopback_is_flagged(tmp_path: Path) -> None:
    text = solid(tmp_path).replace("https://auth.example.com", "http://localhost:8080")
    text += "server: {host: 0.0.0.0}\n"
    assert {"issuer", "server.host"} <= fields(config_from(tmp_path, text))


def test_a_local_user_is_only_flagged_when_the_password_is_demo(tmp_path: Path) -> None:
    from argon2 import PasswordHasher

    other = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1).hash("correct horse")
    demo = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1).hash("demo")
    text = solid(tmp_path).replace(
        "provider:\n  type: oidc\n  issuer: https://idp.example.com\n  client_id: mcp\n",
        "provider:\n  type: local\n  users:\n"
        f"    - {{username: alice, password_hash: '{other}'}}\n"
        f"    - {{username: bob, password_hash: '{demo}'}}\n",
    )
    warnings = check_warnings(config_from(tmp_path, text))
    assert [w.field for w in warnings] == ["provider.users.1.password_hash"]
    assert "bob" in warnings[0].risk


def test_a_warning_reads_as_field_risk_and_fix() -> None:
    warning = ConfigWarning("consent.enabled", "consent is off", "turn it on")
    assert str(warning) == "consent.enabled: consent is off; turn it on"

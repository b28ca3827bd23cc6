"""The `registration:` and `cimd:` configuration sections and their warnings."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from mcp_oauthd.config.loader import check_warnings
from tests.conftest import base_config

NO_USERS = {"type": "local", "users": []}  # check_warnings would argon2-verify each user


def test_the_defaults_let_mcp_clients_register_and_use_metadata_documents() -> None:
    config = base_config(8080)
    assert config.registration.policy == "open"
    assert config.registration.allow_public_clients
    assert config.registration.max_clients_per_ip > 0
    assert config.registration.max_per_window > 0
    assert config.cimd.enabled
    assert config.cimd.max_bytes == 5120
    assert not config.cimd.allow_loopback_for_tests


def test_the_token_policy_needs_a_long_enough_initial_access_token() -> None:
    with pytest.raises(ValidationError, match="initial_access_token"):
        base_config(8080, registration={"policy": "token"})
    with pytest.raises(ValidationError, match="at least 20"):
        base_config(8080, registration={"policy": "token", "initial_access_token": "short"})
    config = base_config(
        8080, registration={"policy": "token", "initial_access_token": {"value": "t" * 32}}
    )
    assert "t" * 32 not in repr(config)


def test_the_loopback_test_switch_is_refused_outside_a_loopback_setup() -> None:
    with pytest.raises(ValidationError, match="tests only"):
        base_config(
            8080, issuer="https://auth.example.com", cimd={"allow_loopback_for_tests": True}
        )
    config = base_config(8080, provider=NO_USERS, cimd={"allow_loopback_for_tests": True})
    warned = {w.field for w in check_warnings(config)}
    assert "cimd.allow_loopback_for_tests" in warned


def test_open_registration_without_limits_is_warned_about() -> None:
    config = base_config(
        8080, provider=NO_USERS, registration={"max_clients_per_ip": 0, "max_per_window": 0}
    )
    assert "registration" in {w.field for w in check_warnings(config)}
    default = base_config(8080, provider=NO_USERS)
    assert "registration" not in {w.field for w in check_warnings(default)}


@pytest.mark.parametrize(
    "cimd",
    [
        {"allowed_hosts": ["Example.com"]},
        {"allowed_hosts": ["https://example.com"]},
        {"allowed_hosts": ["*"]},
        {"min_cache_ttl": 100, "max_cache_ttl": 50},
        {"max_bytes": 10},
        {"ca_file": "/no/such/ca.pem"},
    ],
)
def test_bad_cimd_settings_are_refused(cimd: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        base_config(8080, cimd=cimd)


def test_cimd_accepts_an_allowlist_and_an_extra_ca(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    config = base_config(
        8080, cimd={"allowed_hosts": ["claude.ai", "*.example.com"], "ca_file": str(ca)}
    )
    assert config.cimd.allowed_hosts == ["claude.ai", "*.example.com"]

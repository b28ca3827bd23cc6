"""RFC 7591 client metadata validation and defaults, without HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from mcp_oauthd.oauth.errors import InvalidClientMetadata, InvalidRedirectUri
from mcp_oauthd.oauth.redirects import RedirectPolicy
from mcp_oauthd.oauth.registration import ClientMetadata, parse_client_metadata
from tests.clients.conftest import CLAUDE_CODE, CURSOR, INSPECTOR, PYTHON_SDK, VSCODE, WEB_APP

KNOWN = ["files:read", "files:write", "mail"]


def parse(raw: Any, *, document: bool = False, **policy: bool) -> ClientMetadata:
    return parse_client_metadata(
        raw, policy=RedirectPolicy(**policy), known_scopes=KNOWN, document=document
    )


@pytest.mark.parametrize("payload", [CLAUDE_CODE, VSCODE, CURSOR, INSPECTOR])
def test_what_public_mcp_clients_send_is_accepted_as_a_native_public_client(
    payload: dict[str, Any],
) -> None:
    meta = parse(payload)
    assert meta.is_public
    assert meta.application_type == "native"
    assert meta.redirect_uris == payload["redirect_uris"]
    assert meta.grant_types == ["authorization_code", "refresh_token"]
    assert meta.scope is None


def test_a_minimal_request_gets_the_defaults() -> None:
    meta = parse({"redirect_uris": ["https://app.example.com/cb"]})
    assert meta.token_endpoint_auth_method == "client_secret_basic"  # RFC 7591 §2
    assert meta.grant_types == ["authorization_code", "refresh_token"]
    assert meta.response_types == ["code"]
    assert meta.application_type == "web"
    assert meta.client_name is None


def test_the_python_sdk_defaults_make_a_confidential_client() -> None:
    meta = parse(PYTHON_SDK)
    assert not meta.is_public
    assert meta.token_endpoint_auth_method == "client_secret_post"


def test_scopes_this_server_does_not_know_are_dropped() -> None:
    assert parse({**WEB_APP, "scope": "files:read openid profile"}).scope == "files:read"
    assert parse({**WEB_APP, "scope": "openid profile"}).scope is None


def test_cosmetic_fields_are_kept_when_well_formed_and_dropped_otherwise() -> None:
    meta = parse(
        {
            **WEB_APP,
            "client_uri": "https://agent.example.com",
            "logo_uri": "javascript:alert(1)",
            "tos_uri": "http://agent.example.com/tos",
            "contacts": ["ops@agent.example.com", 42],
            "software_id": "agent",
            "jwks": {"keys": []},
            "unknown_field": "ignored",
        }
    )
    assert meta.extra == {
        "client_uri": "https://agent.example.com",
        "contacts": ["ops@agent.example.com"],
        "software_id": "agent",
    }


def test_the_client_name_is_trimmed_and_control_characters_refused() -> None:
    assert parse({**WEB_APP, "client_name": "  Hosted   Agent "}).client_name == "Hosted Agent"
    for spoof in ("Good\u202eppA", "Good\x1b[31mApp", "Go\u200dod", "Good\nApp"):
        with pytest.raises(InvalidClientMetadata, match="control"):
            parse({**WEB_APP, "client_name": spoof})
    assert parse({**WEB_APP, "client_name": "Élan Vital 日本"}).client_name == "Élan Vital 日本"
    with pytest.raises(InvalidClientMetadata, match="at most"):
        parse({**WEB_APP, "client_name": "x" * 201})


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"token_endpoint_auth_method": "private_key_jwt"}, "token_endpoint_auth_method"),
        ({"token_endpoint_auth_method": 7}, "token_endpoint_auth_method"),
        ({"grant_types": ["implicit"]}, "grant_types"),
        ({"grant_types": ["client_credentials", "authorization_code"]}, "grant_types"),
        ({"grant_types": ["refresh_token"]}, "authorization_code"),
        ({"grant_types": "authorization_code"}, "array"),
        ({"response_types": ["token"]}, "response_types"),
        ({"response_types": ["code", "id_token"]}, "response_types"),
        ({"response_types": []}, "response_types"),
        ({"application_type": "desktop"}, "application_type"),
        ({"scope": 42}, "scope"),
        ({"scope": 'files:read "quoted"'}, "scope"),
        ({"client_name": ["a"]}, "client_name"),
    ],
)
def test_inconsistent_or_unsupported_metadata_is_invalid_client_metadata(
    changes: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(InvalidClientMetadata, match=fragment) as caught:
        parse({**WEB_APP, **changes})
    assert caught.value.error == "invalid_client_metadata"


@pytest.mark.parametrize(
    "changes",
    [
        {"redirect_uris": []},
        {"redirect_uris": None},
        {"redirect_uris": ["javascript:alert(1)"]},
        {"redirect_uris": ["https://app.example.com/cb#x"]},
        {"redirect_uris": ["http://app.example.com/cb"]},
        {"redirect_uris": [f"https://app.example.com/{i}" for i in range(21)]},
        {"redirect_uris": ["http://127.0.0.1/cb"], "application_type": "web"},
        {"redirect_uris": ["cursor://x/cb"], "application_type": "web"},
    ],
)
def test_bad_redirect_uris_are_invalid_redirect_uri(changes: dict[str, Any]) -> None:
    with pytest.raises(InvalidRedirectUri) as caught:
        parse({**WEB_APP, **changes})
    assert caught.value.error == "invalid_redirect_uri"


def test_a_body_that_is_not_an_object_is_refused() -> None:
    bodies: list[Any] = [[], "x", None, 3]
    for raw in bodies:
        with pytest.raises(InvalidClientMetadata):
            parse(raw)


def test_a_metadata_document_must_be_public_named_and_secret_free() -> None:
    doc = {"client_name": "Agent", "redirect_uris": ["http://127.0.0.1/cb"]}
    assert parse(doc, document=True).token_endpoint_auth_method == "none"
    with pytest.raises(InvalidClientMetadata, match="client_name"):
        parse({"redirect_uris": ["http://127.0.0.1/cb"]}, document=True)
    with pytest.raises(InvalidClientMetadata, match="none"):
        parse({**doc, "token_endpoint_auth_method": "client_secret_post"}, document=True)
    with pytest.raises(InvalidClientMetadata, match="client_secret"):
        parse({**doc, "client_secret": "s3cret"}, document=True)


def test_registrations_differing_only_in_loopback_port_have_one_fingerprint() -> None:
    one = parse({**CLAUDE_CODE, "redirect_uris": ["http://localhost:1111/callback"]})
    two = parse({**CLAUDE_CODE, "redirect_uris": ["http://localhost:2222/callback"]})
    other = parse({**CLAUDE_CODE, "client_name": "Claude Code (mail)"})
    assert one.fingerprint("192.0.2.1") == two.fingerprint("192.0.2.1")
    assert one.fingerprint("192.0.2.1") != two.fingerprint("192.0.2.2")
    assert one.fingerprint("192.0.2.1") != other.fingerprint("192.0.2.1")

"""Client credentials from a token/revocation/introspection request (RFC 6749 §2.3)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote_plus

from mcp_oauthd.oauth.errors import InvalidClient, InvalidRequest


@dataclass(frozen=True)
class ClientCredentials:
    client_id: str
    secret: str | None
    method: str  # "client_secret_basic" | "client_secret_post" | "none"


def parse(authorization: str | None, form: Mapping[str, str]) -> ClientCredentials:
    basic: tuple[str, str] | None = None
    if authorization and authorization[:6].lower() == "basic ":
        try:
            raw = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise InvalidClient(
                "malformed Basic credentials", www_authenticate='Basic realm="oauth"'
            ) from None
        user, sep, password = raw.partition(":")
        if not sep:
            raise InvalidClient(
                "malformed Basic credentials", www_authenticate='Basic realm="oauth"'
            )
        # RFC 6749 §2.3.1: id and secret are form-urlencoded before Basic encoding.
        basic = (unquote_plus(user), unquote_plus(password))
    form_id = form.get("client_id")
    form_secret = form.get("client_secret")
    if basic is not None:
        # RFC 6749 §2.3: a client MUST NOT use more than one authentication method.
        if form_secret is not None:
            raise InvalidRequest("use one client authentication method, not two")
        if form_id is not None and form_id != basic[0]:
            raise InvalidRequest("client_id does not match the Basic credentials")
        return ClientCredentials(basic[0], basic[1], "client_secret_basic")
    if not form_id:
        raise InvalidClient("client authentication is required")
    if form_secret is not None:
        return ClientCredentials(form_id, form_secret, "client_secret_post")
    return ClientCredentials(form_id, None, "none")

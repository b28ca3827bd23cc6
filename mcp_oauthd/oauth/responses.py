"""Authorization responses, built with a URL builder, never string formatting."""

from __future__ import annotations

from yarl import URL

from mcp_oauthd.oauth.errors import OAuthError


def authorization_response(redirect_uri: str, params: dict[str, str | None]) -> str:
    """Append parameters to the client's redirect URI, keeping its own query
    (RFC 6749 §3.1.2: the query component MUST be retained)."""
    url = URL(redirect_uri, encoded=True)
    extra = {k: v for k, v in params.items() if v is not None}
    return str(url.extend_query(extra))


def error_response(redirect_uri: str, error: OAuthError, state: str | None, issuer: str) -> str:
    # RFC 9207 §2: `iss` accompanies error responses too.
    return authorization_response(
        redirect_uri,
        {
            "error": error.error,
            "error_description": error.description,
            "state": state,
            "iss": issuer,
        },
    )

"""The OAuth error hierarchy (RFC 6749 §5.2, RFC 6750 §3.1, RFC 7591 §3.2.2, RFC 8707 §2).

Protocol code raises these; exactly one place (``http.errors``) renders them. A
``description`` is shown to clients, so it must never contain a secret, a token, a code
or an internal detail such as an exception message from storage.
"""

from __future__ import annotations


class OAuthError(Exception):
    error: str = "invalid_request"
    status: int = 400

    def __init__(
        self,
        description: str | None = None,
        *,
        status: int | None = None,
        retry_after: int | None = None,
        www_authenticate: str | None = None,
    ) -> None:
        super().__init__(description or self.error)
        self.description = description
        if status is not None:
            self.status = status
        self.retry_after = retry_after
        self.www_authenticate = www_authenticate

    def to_dict(self) -> dict[str, str]:
        body = {"error": self.error}
        if self.description:
            body["error_description"] = self.description
        return body


class InvalidRequest(OAuthError):
    error = "invalid_request"


class InvalidClient(OAuthError):
    """RFC 6749 §5.2: 401 with WWW-Authenticate when the client used HTTP auth."""

    error = "invalid_client"
    status = 401


class InvalidGrant(OAuthError):
    error = "invalid_grant"


class UnauthorizedClient(OAuthError):
    error = "unauthorized_client"


class UnsupportedGrantType(OAuthError):
    error = "unsupported_grant_type"


class UnsupportedResponseType(OAuthError):
    error = "unsupported_response_type"


class UnsupportedTokenType(OAuthError):
    """RFC 7009 §2.2.1."""

    error = "unsupported_token_type"


class InvalidScope(OAuthError):
    error = "invalid_scope"


class InvalidTarget(OAuthError):
    """RFC 8707 §2: the requested resource is unknown or not allowed."""

    error = "invalid_target"


class AccessDenied(OAuthError):
    error = "access_denied"
    status = 403


class InvalidToken(OAuthError):
    """RFC 6750 §3.1."""

    error = "invalid_token"
    status = 401


class InsufficientScope(OAuthError):
    """RFC 6750 §3.1: 403."""

    error = "insufficient_scope"
    status = 403


class InvalidClientMetadata(OAuthError):
    """RFC 7591 §3.2.2."""

    error = "invalid_client_metadata"


class InvalidRedirectUri(OAuthError):
    """RFC 7591 §3.2.2."""

    error = "invalid_redirect_uri"


class ServerError(OAuthError):
    error = "server_error"
    status = 500


class TemporarilyUnavailable(OAuthError):
    error = "temporarily_unavailable"
    status = 503

    def __init__(self, description: str | None = None, *, retry_after: int = 5) -> None:
        super().__init__(description, retry_after=retry_after)


class RateLimited(OAuthError):
    """429 with Retry-After. RFC 6749 has no code for it; ``slow_down`` reads best."""

    error = "slow_down"
    status = 429

    def __init__(self, retry_after: int, description: str | None = None) -> None:
        super().__init__(description or "too many requests", retry_after=retry_after)


class NotFound(OAuthError):
    error = "not_found"
    status = 404


class MethodNotAllowed(OAuthError):
    error = "method_not_allowed"
    status = 405

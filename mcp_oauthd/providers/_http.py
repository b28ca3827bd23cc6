"""The HTTP plumbing shared by the providers that talk to an upstream over the network.

One lazily created ``aiohttp.ClientSession`` per provider, a bounded timeout on every
call, no redirects followed, a cap on response size, and a single mapping of network
trouble to ``UpstreamError("unavailable")``. Error messages name what failed, never a
token, code, secret or response body.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from mcp_oauthd.config.models import is_loopback_host
from mcp_oauthd.observability.tracing import upstream_call
from mcp_oauthd.providers.base import UpstreamError

SessionFactory = Callable[[], aiohttp.ClientSession]

MAX_RESPONSE_BYTES = 1 << 20
USER_AGENT = "mcp-oauthd"


def client_timeout(timeout: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=timeout, connect=min(5.0, timeout))


def check_upstream_url(url: str, *, allow_insecure_http: bool, what: str) -> None:
    """Refuse anything but https, except plain http on loopback when explicitly allowed."""
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError(f"{what} must be an absolute https URL")
    if parts.scheme == "https":
        return
    if parts.scheme == "http" and allow_insecure_http and is_loopback_host(parts.hostname):
        return
    raise ValueError(
        f"{what} must use https (plain http is allowed only on loopback with "
        "allow_insecure_http, for tests)"
    )


def basic_auth_header(client_id: str, client_secret: str) -> str:
    """RFC 6749 §2.3.1: form-urlencode id and secret, then HTTP Basic."""
    raw = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


class HttpClient:
    """A provider's HTTP client: owns its session, maps failures to ``UpstreamError``."""

    def __init__(
        self, *, provider: str, timeout: float, session_factory: SessionFactory | None = None
    ) -> None:
        self._provider = provider
        self._timeout = client_timeout(timeout)
        self._factory = session_factory
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if self._factory is not None:
                self._session = self._factory()
            else:
                self._session = aiohttp.ClientSession(
                    timeout=self._timeout, headers={"User-Agent": USER_AGENT}
                )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request_json(
        self,
        method: str,
        url: str,
        *,
        what: str,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        """Send a request, return ``(status, parsed JSON body or None)``.

        Connection errors, timeouts and 5xx answers raise ``UpstreamError("unavailable")``;
        an oversized body raises ``UpstreamError("server_error")``.
        """
        send_headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        send_headers.update(headers or {})
        try:
            # A client span with W3C trace context in the headers, so the IdP's traces
            # join ours (a no-op when tracing is off).
            with upstream_call(
                method, url, what=what, provider=self._provider, headers=send_headers
            ) as span:
                async with self.session().request(
                    method,
                    url,
                    data=dict(data) if data is not None else None,
                    headers=send_headers,
                    params=dict(params) if params is not None else None,
                    allow_redirects=False,
                    timeout=self._timeout,
                ) as response:
                    status = response.status
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        raise UpstreamError(
                            "unavailable", f"{self._provider}: {what} answered HTTP {status}"
                        )
                    body = await response.content.read(MAX_RESPONSE_BYTES + 1)
        except UpstreamError:
            raise
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise UpstreamError(
                "unavailable", f"{self._provider}: {what} unreachable ({type(exc).__name__})"
            ) from None
        if len(body) > MAX_RESPONSE_BYTES:
            raise UpstreamError("server_error", f"{self._provider}: {what} answer too large")
        try:
            parsed: Any = json.loads(body) if body else None
        except ValueError:
            parsed = None
        return status, parsed

"""Browser cookies: signed, HttpOnly, SameSite=Lax, ``__Host-`` and Secure on https."""

from __future__ import annotations

import time

from aiohttp import web

from mcp_oauthd.security.crypto import Signer, random_token


class BrowserCookies:
    def __init__(self, signer: Signer, https: bool) -> None:
        self.signer = signer
        self.https = https
        prefix = "__Host-" if https else ""
        self.browser_name = f"{prefix}mcp_oauthd_browser"
        self.user_name = f"{prefix}mcp_oauthd_user"

    def _set(self, response: web.StreamResponse, name: str, value: str, max_age: int) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path="/",
            secure=self.https,
            httponly=True,
            samesite="Lax",  # the upstream callback is a top-level cross-site GET
        )

    def browser(self, request: web.Request) -> str | None:
        raw = request.cookies.get(self.browser_name)
        return self.signer.unsign("browser", raw) if raw else None

    def ensure_browser(self, request: web.Request) -> tuple[str, bool]:
        """The browser binding value; True when it is new and must be set."""
        current = self.browser(request)
        if current:
            return current, False
        return random_token(32), True

    def set_browser(self, response: web.StreamResponse, value: str) -> None:
        self._set(response, self.browser_name, self.signer.sign("browser", value), 86400)

    def user(self, request: web.Request) -> str | None:
        raw = request.cookies.get(self.user_name)
        if not raw:
            return None
        value = self.signer.unsign("user", raw)
        if value is None:
            return None
        subject, _, expiry = value.rpartition("|")
        try:
            if float(expiry) < time.time():
                return None
        except ValueError:
            return None
        return subject or None

    def set_user(self, response: web.StreamResponse, subject: str, max_age: int) -> None:
        value = f"{subject}|{int(time.time()) + max_age}"
        self._set(response, self.user_name, self.signer.sign("user", value), max_age)

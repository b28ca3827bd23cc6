"""HTML pages: jinja2 templates with autoescaping, rendered with the common context."""

from __future__ import annotations

from typing import Any

import jinja2
from aiohttp import web

PRODUCT_NAME = "mcp-oauthd"


def make_environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("mcp_oauthd.http", "templates"),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        undefined=jinja2.StrictUndefined,
        enable_async=False,
    )


class Pages:
    def __init__(self, static_url: str) -> None:
        self.env = make_environment()
        self.static_url = static_url

    def render(self, template: str, context: dict[str, Any], status: int = 200) -> web.Response:
        body = self.env.get_template(f"{template}.html").render(
            product_name=PRODUCT_NAME, static_url=self.static_url, **context
        )
        response = web.Response(text=body, status=status, content_type="text/html")
        # Pages may carry CSRF tokens and flow ids: never cache them.
        response.headers["Cache-Control"] = "no-store"
        return response

    def error(
        self, title: str, message: str, status: int = 400, request_id: str | None = None
    ) -> web.Response:
        return self.render(
            "error", {"title": title, "message": message, "request_id": request_id}, status
        )

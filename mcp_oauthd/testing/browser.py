"""A scripted browser for flow tests: follows redirects by hand, reads forms from our
HTML pages and keeps cookies, so a test walks exactly the path a person's browser does."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlsplit

import aiohttp
from yarl import URL


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, object]] = []
        self._current: dict[str, object] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._current = {"action": a.get("action", ""), "method": a.get("method", "get")}
            self._current["fields"] = {}
            self.forms.append(self._current)
        elif tag == "input" and self._current is not None and a.get("name"):
            fields = self._current["fields"]
            assert isinstance(fields, dict)
            if a.get("type") == "checkbox" and "checked" not in a:
                return
            fields[a["name"]] = a.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None


def parse_forms(html: str) -> list[dict[str, object]]:
    parser = _FormParser()
    parser.feed(html)
    return parser.forms


def form_fields(html: str, index: int = 0) -> tuple[str, dict[str, str]]:
    form = parse_forms(html)[index]
    fields = form["fields"]
    assert isinstance(fields, dict)
    return str(form["action"]), {str(k): str(v) for k, v in fields.items()}


@dataclass
class Hop:
    status: int
    url: str
    location: str | None
    text: str


@dataclass
class ScriptedBrowser:
    session: aiohttp.ClientSession
    history: list[Hop] = field(default_factory=list)

    async def get(self, url: str) -> Hop:
        async with self.session.get(url, allow_redirects=False) as resp:
            hop = Hop(resp.status, url, resp.headers.get("Location"), await resp.text())
        self.history.append(hop)
        return hop

    async def post(self, url: str, data: dict[str, str]) -> Hop:
        async with self.session.post(url, data=data, allow_redirects=False) as resp:
            hop = Hop(resp.status, url, resp.headers.get("Location"), await resp.text())
        self.history.append(hop)
        return hop

    async def follow(self, hop: Hop, stop_prefix: str) -> Hop:
        """Follow redirects until one points at ``stop_prefix`` (the client) or a page."""
        while hop.status in (301, 302, 303) and hop.location:
            target = str(URL(hop.url).join(URL(hop.location)))
            if target.startswith(stop_prefix):
                return hop
            hop = await self.get(target)
        return hop


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}

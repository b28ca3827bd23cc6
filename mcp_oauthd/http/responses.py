"""Security headers and JSON responses.

Every response carries the security headers (:data:`SECURITY_HEADERS`); the request
pipeline adds them to responses that lack them. JSON responses are built with them from
the start, from a prepared header set: every request to a protected MCP server costs one
introspection (or ``/auth/verify``) answer, and adding headers one by one afterwards was a
measurable share of it (bench/README.md). JSON is rendered with orjson (a tenth of the
standard library's cost): compact, UTF-8, the same content type as aiohttp's
``json_response``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict

# No script at all on our pages. `form-action` is left out on purpose: a consent or login
# POST ends in a redirect chain to the IdP or the client's redirect URI (any loopback port,
# custom schemes), and browsers apply form-action to every hop of that chain.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Content-Security-Policy", CSP),
)
#: Only on an https issuer (the pipeline adds it).
HSTS = ("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
#: The header whose presence says the security headers are already there.
SECURITY_MARKER = SECURITY_HEADERS[0][0]

#: RFC 6749 §5.1 (token responses) and RFC 7662 §4 (introspection): never cached.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

_JSON = "application/json; charset=utf-8"
_BASE = CIMultiDict([("Content-Type", _JSON), *SECURITY_HEADERS])
_BASE_NO_STORE = CIMultiDict([*_BASE.items(), *NO_STORE.items()])


def json_response(
    body: Any,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    content_type: str | None = None,
) -> web.Response:
    prepared: CIMultiDict[str]
    if headers is NO_STORE and content_type is None:
        # The hot paths: no merging at all, and no copy either (web.Response makes the
        # response's own header multidict from what it is given).
        prepared = _BASE_NO_STORE
    else:
        prepared = _BASE.copy()
        if content_type is not None:
            prepared["Content-Type"] = f"{content_type}; charset=utf-8"
        if headers:
            prepared.update(headers)
    return web.Response(body=orjson.dumps(body), status=status, headers=prepared)

"""Scope strings (RFC 6749 §3.3): space-delimited, case-sensitive, order irrelevant."""

from __future__ import annotations

import re
from collections.abc import Iterable

from mcp_oauthd.oauth.errors import InvalidScope

# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")


def parse(scope: str | None) -> list[str]:
    if scope is None:
        return []
    items = [s for s in scope.split(" ") if s]
    for item in items:
        if not _TOKEN.match(item):
            raise InvalidScope("the scope parameter is malformed")
    return list(dict.fromkeys(items))


def fmt(scopes: Iterable[str]) -> str:
    return " ".join(scopes)


def resolve(requested: list[str], *, allowed: Iterable[str], default: Iterable[str]) -> list[str]:
    """The scopes to grant: the request's (all allowed) or the default when it names none."""
    allowed_set = set(allowed)
    if not requested:
        granted = [s for s in default if s in allowed_set]
        if not granted:
            raise InvalidScope("no scope was requested and this client has no default scope")
        return granted
    unknown = [s for s in requested if s not in allowed_set]
    if unknown:
        raise InvalidScope("the requested scope is not allowed for this client and resource")
    return requested

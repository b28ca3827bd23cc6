"""RFC 9700 §4.15: client impersonating resource owner. A client can never choose an
identifier that a resource server would read as a user: client ids are assigned by the
server (or are https URLs for metadata documents), there is no client_credentials grant,
and every token names the user (`sub`) and the client (`client_id`) apart."""

from __future__ import annotations

from typing import Any

import pytest

from tests.daemon import Daemon
from tests.resource.conftest import local_provider
from tests.security.support import introspect, resources


async def register(daemon: Daemon, **metadata: Any) -> tuple[int, dict[str, Any]]:
    body = {"redirect_uris": ["http://127.0.0.1/callback"], "client_name": "x", **metadata}
    async with daemon.http.post(daemon.url + "/oauth/register", json=body) as resp:
        return resp.status, await resp.json()


@pytest.mark.parametrize("wanted", ["local:alice", "alice", "cli", "alice@example.com"])
async def test_a_registering_client_cannot_choose_its_client_id(
    daemon: Daemon, wanted: str
) -> None:
    """RFC 9700 §4.15.1: a client_id equal to a user's subject (or to another client) could
    be mistaken for that user by a resource server; the server assigns it."""
    status, body = await register(daemon, client_id=wanted)
    assert status == 201
    assert body["client_id"] != wanted
    assert len(body["client_id"]) >= 20


async def test_the_client_credentials_grant_does_not_exist(daemon: Daemon) -> None:
    """RFC 9700 §4.15: no token without a user means no client-chosen `sub`."""
    status, body, _ = await daemon.token({"grant_type": "client_credentials", "client_id": "cli"})
    assert (status, body["error"]) == (400, "unsupported_grant_type")


async def test_a_token_names_the_user_and_the_client_separately(daemon_factory: Any) -> None:
    """RFC 9700 §4.15.1: the resource server reads the user from `sub` only."""
    daemon: Daemon = await daemon_factory(provider=local_provider(), resources=resources())
    token = (await daemon.tokens())["access_token"]
    body = await introspect(daemon, token)
    assert body["sub"] == "local:alice"
    assert body["client_id"] == "cli"

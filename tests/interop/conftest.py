"""Fixtures for the interop tests: a real OpenID Connect provider (``node_idp.py``).

Its npm dependencies are installed from the committed lock file with ``npm ci`` the first
time (and again when the lock file changes), so a fresh clone needs only ``node`` and
``npm``. Without ``node`` these tests are skipped, saying why; any other setup failure
fails them.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tests.interop.node_idp import (
    NodeOidcProvider,
    NodeSetupError,
    install_node_modules,
    start_node_oidc_provider,
)

StartProvider = Callable[..., Awaitable[NodeOidcProvider]]


@pytest.fixture(scope="session")
def node_executable() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip(
            "node is not installed: the interop tests run the real OpenID Connect provider "
            "oidc-provider on Node.js (install Node.js >= 18 and npm to run them)"
        )
    try:
        install_node_modules()
    except NodeSetupError as exc:
        pytest.fail(str(exc))
    return node


@pytest.fixture
async def start_node_provider(node_executable: str) -> AsyncIterator[StartProvider]:
    """``await start(redirect_uris, access_token_ttl=60)``: a running oidc-provider with
    mcp-oauthd registered for those callback URLs; stopped at teardown."""
    started: list[NodeOidcProvider] = []

    async def start(redirect_uris: list[str], *, access_token_ttl: int = 60) -> NodeOidcProvider:
        provider = await start_node_oidc_provider(
            node_executable, redirect_uris, access_token_ttl=access_token_ttl
        )
        started.append(provider)
        return provider

    yield start
    for provider in reversed(started):
        await provider.stop()

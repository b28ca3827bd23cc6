from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import pytest
import structlog
from argon2 import PasswordHasher

from mcp_oauthd.config.models import Config

DEMO_HASH = PasswordHasher().hash("correct horse battery staple")
DEMO_PASSWORD = "correct horse battery staple"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_config(port: int, **overrides: Any) -> Config:
    data: dict[str, Any] = {
        "issuer": f"http://127.0.0.1:{port}",
        "server": {"host": "127.0.0.1", "port": port},
        "storage": {"type": "memory"},
        "provider": {
            "type": "local",
            "users": [
                {
                    "username": "alice",
                    "password_hash": DEMO_HASH,
                    "email": "alice@example.com",
                    "groups": ["staff"],
                },
                {
                    "username": "mallory",
                    "password_hash": DEMO_HASH,
                    "email": "mallory@evil.example",
                },
            ],
        },
        "resources": [
            {
                "uri": "http://127.0.0.1:9999/mcp",
                "name": "Files",
                "scopes": ["files:read", "files:write"],
                "default_scopes": ["files:read"],
                "default": True,
            },
            {"uri": "https://mail.example.com/mcp", "scopes": ["mail"]},
        ],
        "clients": [
            {
                "client_id": "cli",
                "client_name": "Test CLI",
                "redirect_uris": ["http://127.0.0.1/callback"],
            },
            {
                "client_id": "webapp",
                "client_name": "Web App",
                "client_secret": "s3cret-s3cret-s3cret",
                "redirect_uris": ["https://app.example.com/cb"],
            },
            {
                "client_id": "ide",
                "client_name": "IDE",
                "redirect_uris": ["cursor://anysphere.cursor-retrieval/oauth/callback"],
            },
        ],
    }
    for key, value in overrides.items():
        data[key] = value
    return Config.model_validate(data)


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as session:
        yield session


ConfigFactory = Callable[..., Config]


# Daemon fixtures (a real mcp-oauthd on a loopback port) for every test folder.
pytest_plugins = ["tests.daemon", "tests.processes"]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Leave the process-wide logging set-up as the test found it (tests that configure
    logging use it: ``pytestmark = pytest.mark.usefixtures("restore_logging")``)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()

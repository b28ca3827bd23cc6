"""The security suite's daemon: the shared fixture with cheap argon2 parameters for the
users, since nearly every attack here walks the login flow (password hashing strength is
not what these tests are about)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.daemon import Daemon
from tests.resource.conftest import local_provider


@pytest.fixture
async def daemon(daemon_factory: Any) -> Daemon:
    result: Daemon = await daemon_factory(provider=local_provider())
    return result

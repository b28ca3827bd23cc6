from __future__ import annotations

import secrets

import pytest

from mcp_oauthd.clock import FakeClock
from mcp_oauthd.testing.fake_idp import s256

REDIRECT_URI = "http://127.0.0.1:8080/oauth/callback"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


class Pkce:
    def __init__(self) -> None:
        self.verifier = secrets.token_urlsafe(48)
        self.challenge = s256(self.verifier)


@pytest.fixture
def pkce() -> Pkce:
    return Pkce()

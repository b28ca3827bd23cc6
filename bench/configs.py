"""The daemon configuration the benchmark runs (pure: builds a dict; unit-tested).

Everything is as shipped — rate limiting on, Prometheus metrics on the main listener,
logging at its defaults (info, JSON because stderr is a file, access log on), tracing off —
except what a benchmark from one address needs:

- **per-IP rate-limit budgets are raised** (every wrk connection comes from 127.0.0.1, so
  the shipped per-IP budgets — e.g. 300 token requests a minute — would turn the run into
  a 429 benchmark). The limiter still runs on every request and costs what it costs;
- **registration caps are off** (``max_clients_per_ip: 0``, ``max_per_window: 0``) for the
  same reason;
- explicit ``security`` keys (Redis requires them; the others use them too so the seeding
  process and the daemon share the key ring without a generated key file).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

RESOURCE = "http://127.0.0.1:8000/mcp"
CLIENT_ID = "bench-cli"
REDIRECT_URI = "http://127.0.0.1/callback"
RS_CLIENT_ID = "bench-rs"
USERNAME = "bench"
#: What no real per-IP budget would allow: the limiter runs, never refuses.
RAISED_BUDGET = {"per_minute": 1_000_000_000, "burst": 1_000_000}
BUDGETS = ("authorize", "login", "login_user", "token", "registration", "introspect", "default")


def _key(seed: str, purpose: str) -> str:
    digest = hashlib.sha256(f"{seed}:{purpose}".encode()).digest()
    return base64.urlsafe_b64encode(digest).decode()


def rs_secret(seed: str) -> str:
    """The resource server's introspection secret (high entropy, 43+ characters)."""
    return _key(seed, "rs-secret").rstrip("=")


def daemon_config(
    *,
    backend: str,
    port: int,
    seed: str,
    password_hash: str,
    token_format: str = "opaque",
    workers: int = 1,
    sqlite_path: str | None = None,
    redis_url: str | None = None,
    redis_prefix: str | None = None,
) -> dict[str, Any]:
    """The YAML-ready config of one benchmark daemon."""
    storage: dict[str, Any]
    if backend == "memory":
        storage = {"type": "memory"}
    elif backend == "sqlite":
        if sqlite_path is None:
            raise ValueError("sqlite needs a path")
        storage = {"type": "sqlite", "path": sqlite_path}
    elif backend == "redis":
        if redis_url is None or redis_prefix is None:
            raise ValueError("redis needs a URL and a key prefix")
        storage = {"type": "redis", "url": redis_url, "key_prefix": redis_prefix}
    else:
        raise ValueError(f"unknown backend {backend!r}")
    return {
        "issuer": f"http://127.0.0.1:{port}",
        "server": {"host": "127.0.0.1", "port": port, "workers": workers},
        "storage": storage,
        "provider": {
            "type": "local",
            "users": [
                {
                    "username": USERNAME,
                    "password_hash": password_hash,
                    "email": "bench@example.com",
                }
            ],
        },
        "resources": [
            {
                "uri": RESOURCE,
                "name": "Bench MCP server",
                "scopes": ["mcp"],
                "default": True,
                "introspection_client_id": RS_CLIENT_ID,
                "introspection_client_secret": rs_secret(seed),
            }
        ],
        "clients": [
            {"client_id": CLIENT_ID, "client_name": "Bench CLI", "redirect_uris": [REDIRECT_URI]}
        ],
        "registration": {"max_clients_per_ip": 0, "max_per_window": 0},
        "tokens": {"format": token_format},
        "security": {
            "encryption_keys": [{"id": "bench-1", "key": _key(seed, "encryption")}],
            "cookie_secret": _key(seed, "cookie"),
        },
        "rate_limits": {name: dict(RAISED_BUDGET) for name in BUDGETS},
    }

"""Reading the deployment recipes under deploy/ the way their tools would, and checking
what they name against the code: config files through the real config loader, HTTP paths
through the real router."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from mcp_oauthd.app import create_app
from mcp_oauthd.config.loader import load_config
from mcp_oauthd.config.models import Config
from mcp_oauthd.service.introspect import Verified
from mcp_oauthd.storage.base import AccessTokenRecord
from mcp_oauthd.storage.memory import MemoryStorage

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
STATE_DIR = "/var/lib/mcp-oauthd"
# A valid encryption key (32 bytes, base64url) for recipes' key variables.
DUMMY_KEY = "bmV3LWtleS1uZXcta2V5LW5ldy1rZXktbmV3LWtleSE"

_ENV_SOURCE = re.compile(r"\{\s*env:\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}")
_INTERPOLATED = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")


def yaml_documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def kubernetes_objects(folder: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(folder.glob("*.yaml")):
        for doc in yaml_documents(path):
            if (
                isinstance(doc, dict)
                and "kind" in doc
                and doc.get("apiVersion") != ("kustomize.config.k8s.io/v1beta1")
            ):
                yield path, doc


def required_env(config_text: str) -> set[str]:
    """Environment variables a config needs: ``{env: NAME}`` sources and ``${NAME}``
    references without a default."""
    names = set(_ENV_SOURCE.findall(config_text))
    names |= {m.group(1) for m in _INTERPOLATED.finditer(config_text) if m.group(2) is None}
    return names


def referenced_env(config_text: str) -> set[str]:
    """Every variable a config names, with or without a default."""
    return set(_ENV_SOURCE.findall(config_text)) | {
        m.group(1) for m in _INTERPOLATED.finditer(config_text)
    }


def dummy_value(name: str) -> str:
    if "ENCRYPTION_KEY" in name:
        return DUMMY_KEY
    if "REDIS_URL" in name:
        return "redis://:password@redis:6379/0"
    if name.endswith("ISSUER"):
        return "https://auth.example.com"
    if name.endswith("RESOURCE"):
        return "https://files.example.com/mcp"
    if name.endswith("PORT"):
        return "8080"
    if name.endswith("HOST"):
        return "0.0.0.0"
    return "dummy-secret-value-of-at-least-32-characters"


def load_recipe_config(text: str, tmp: Path, extra_env: Mapping[str, str] | None = None) -> Config:
    """Validate a recipe's config with the real loader. Its state directory is swapped for
    ``tmp`` (the loader checks that the SQLite directory exists and is writable here);
    every variable it needs gets a dummy value of the right shape."""
    environ = {name: dummy_value(name) for name in required_env(text)}
    environ.update(extra_env or {})
    path = tmp / "recipe-config.yaml"
    path.write_text(text.replace(STATE_DIR, str(tmp)), encoding="utf-8")
    return load_config(path, environ=environ)


def build_app(config: Config) -> web.Application:
    """The recipe's app, not started (nothing is contacted), on throwaway storage."""
    return create_app(config, storage=MemoryStorage(), run_gc=False)


async def route_exists(app: web.Application, path: str, method: str = "GET") -> bool:
    request = make_mocked_request(method, path, app=app)
    match = await app.router.resolve(request)
    return match.http_exception is None


def identity_headers() -> set[str]:
    """The X-Auth-* headers /auth/verify answers with (from the code that builds them)."""
    record = AccessTokenRecord(
        token_hash="h",
        jti="j",
        grant_id="g",
        client_id="c",
        subject="s",
        username="u",
        email="e@example.com",
        resource="https://r.example.com/mcp",
        scopes=["a"],
        issued_at=0,
        expires_at=1,
    )
    return set(Verified(record).headers())

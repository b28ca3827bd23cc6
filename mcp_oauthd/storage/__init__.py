"""Storage backends behind one contract (see ``base``) and the factory that picks one."""

from __future__ import annotations

from mcp_oauthd import plugins
from mcp_oauthd.config.models import (
    MemoryStorageConfig,
    PluginConfig,
    RedisStorageConfig,
    SqliteStorageConfig,
)

from .base import (
    AccessTokenRecord,
    ClientKind,
    ClientRecord,
    CodeRecord,
    ConsentRecord,
    ConsumeResult,
    ConsumeStatus,
    GrantRecord,
    GrantRevoked,
    Record,
    RefreshTokenRecord,
    RotateResult,
    RotateStatus,
    Storage,
    StorageError,
    StorageUnavailable,
)

StorageConfigUnion = MemoryStorageConfig | SqliteStorageConfig | RedisStorageConfig

__all__ = [
    "AccessTokenRecord",
    "ClientKind",
    "ClientRecord",
    "CodeRecord",
    "ConsentRecord",
    "ConsumeResult",
    "ConsumeStatus",
    "GrantRecord",
    "GrantRevoked",
    "Record",
    "RefreshTokenRecord",
    "RotateResult",
    "RotateStatus",
    "Storage",
    "StorageConfigUnion",
    "StorageError",
    "StorageUnavailable",
    "build_storage",
]


def build_storage(config: StorageConfigUnion | PluginConfig) -> Storage:
    """The backend ``config`` asks for, not yet opened (the caller awaits ``open()``),
    built by the factory its type registers (built-in or plugin: one path, see
    ``mcp_oauthd.plugins``). Raises ``StorageError`` when the type cannot be used."""
    try:
        plugin = plugins.storage.get(config.type)
    except plugins.PluginError as exc:
        raise StorageError(str(exc)) from exc
    if not isinstance(config, plugin.config_model):
        raise StorageError(
            f"storage type {config.type!r} expects a {plugin.config_model.__name__} section, "
            f"not a {type(config).__name__}"
        )
    backend = plugin.factory(config)
    if not isinstance(backend, Storage) or backend.name != config.type:
        raise StorageError(
            f"the factory of storage type {config.type!r} built a {type(backend).__name__} "
            f"named {getattr(backend, 'name', None)!r}; it must implement the Storage "
            f"protocol with name {config.type!r}"
        )
    return backend

"""Storage backends behind one contract (see ``base``) and the factory that picks one."""

from __future__ import annotations

from mcp_oauthd.config.models import (
    MemoryStorageConfig,
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


def build_storage(config: StorageConfigUnion) -> Storage:
    """The backend ``config`` asks for, not yet opened (the caller awaits ``open()``)."""
    if isinstance(config, MemoryStorageConfig):
        from .memory import MemoryStorage

        return MemoryStorage()
    if isinstance(config, SqliteStorageConfig):
        from .sqlite import SqliteStorage

        return SqliteStorage(config)
    if isinstance(config, RedisStorageConfig):
        try:
            from .redis import RedisStorage  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            raise StorageError(
                "the redis storage backend cannot be loaded "
                f"({exc.name or 'a module'} is missing); install mcp-oauthd with its redis "
                "dependency (pip install 'redis>=5') or use storage type 'sqlite'"
            ) from exc
        backend: Storage = RedisStorage(config)
        return backend
    raise StorageError(f"unknown storage type {getattr(config, 'type', config)!r}")

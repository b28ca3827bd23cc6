"""Fixtures shared by the SQLite and Redis test modules (see sqlite_support and
redis_support)."""

from tests.storage.redis_support import prefix, private_redis, redis_storage
from tests.storage.sqlite_support import db_path, sqlite_storage

__all__ = ["db_path", "prefix", "private_redis", "redis_storage", "sqlite_storage"]

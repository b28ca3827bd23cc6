"""Fixtures shared by the SQLite test modules (see sqlite_support)."""

from tests.storage.sqlite_support import db_path, sqlite_storage

__all__ = ["db_path", "sqlite_storage"]

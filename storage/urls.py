"""Opens the repository named by a storage URL."""

from __future__ import annotations

from storage.repository import AccountRepository

SQLITE_PREFIX = "sqlite:///"
MEMORY_URL = "memory://"


class UnsupportedStorageUrl(ValueError):
    pass


def open_repository(url: str) -> AccountRepository:
    """`sqlite:///relative/path.db`, `sqlite:////absolute/path.db` or `memory://`."""
    if url.startswith(SQLITE_PREFIX):
        from storage.sqlite import SqliteRepository

        path = url[len(SQLITE_PREFIX) :]
        if not path:
            raise UnsupportedStorageUrl(f"{url!r}: missing database path")
        return SqliteRepository(path)
    if url == MEMORY_URL:
        from storage.memory import MemoryRepository

        return MemoryRepository()
    raise UnsupportedStorageUrl(f"unsupported storage URL {url!r}: use sqlite:///PATH or memory://")

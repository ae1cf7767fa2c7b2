"""Opens the repository named by a storage URL."""

from __future__ import annotations

from storage.repository import AccountRepository

SQLITE_PREFIX = "sqlite:///"
MEMORY_URL = "memory://"
SPANNER_PREFIX = "spanner://"


class UnsupportedStorageUrl(ValueError):
    pass


def open_repository(url: str) -> AccountRepository:
    """`sqlite:///relative/path.db`, `sqlite:////absolute/path.db`, `memory://` or
    `spanner://projects/P/instances/I/databases/D`."""
    if url.startswith(SQLITE_PREFIX):
        from storage.sqlite import SqliteRepository

        path = url[len(SQLITE_PREFIX) :]
        if not path:
            raise UnsupportedStorageUrl(f"{url!r}: missing database path")
        return SqliteRepository(path)
    if url == MEMORY_URL:
        from storage.memory import MemoryRepository

        return MemoryRepository()
    if url.startswith(SPANNER_PREFIX):
        from storage.spanner import SpannerRepository

        try:
            return SpannerRepository(url)
        except ValueError as exc:
            raise UnsupportedStorageUrl(str(exc)) from exc
    raise UnsupportedStorageUrl(
        f"unsupported storage URL {url!r}: use sqlite:///PATH, memory:// or "
        f"{SPANNER_PREFIX}projects/P/instances/I/databases/D"
    )


def migrate(url: str) -> list[str] | None:
    """Applies the store's pending schema migrations and returns the names of those
    applied (empty: it was up to date). SQLite migrates itself whenever it is opened, so
    for it this opens and closes the database and returns None; memory:// has no schema."""
    if url.startswith(SPANNER_PREFIX):
        from storage.spanner import migrate as migrate_spanner

        try:
            from storage.spanner import DatabasePath

            path = DatabasePath.parse(url)
        except ValueError as exc:
            raise UnsupportedStorageUrl(str(exc)) from exc
        return migrate_spanner(path)
    open_repository(url).close()
    return None

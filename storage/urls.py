"""Opens the repository named by a storage URL."""

from __future__ import annotations

from storage.account_links import AccountLinks
from storage.dead_letters import DeadLetterStore
from storage.repository import AccountRepository

SQLITE_PREFIX = "sqlite:///"
MEMORY_URL = "memory://"
SPANNER_PREFIX = "spanner://"


class UnsupportedStorageUrl(ValueError):
    pass


def open_repository(url: str, *, create: bool = False) -> AccountRepository:
    """`sqlite:///relative/path.db`, `sqlite:////absolute/path.db`, `memory://` or
    `spanner://projects/P/instances/I/databases/D`. A SQLite file is created and migrated
    only with `create` (migrate, seed-demo, and `serve`'s parent before it forks): a
    serving worker opens an existing database only, so a deleted data directory is a store
    failure, never a silently new empty database."""
    if url.startswith(SQLITE_PREFIX):
        from storage.sqlite import SqliteRepository

        path = url[len(SQLITE_PREFIX) :]
        if not path:
            raise UnsupportedStorageUrl(f"{url!r}: missing database path")
        return SqliteRepository(path, create=create)
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
    applied (empty: it was up to date). For SQLite this creates the file if needed and
    applies its migrations, and returns None; memory:// has no schema."""
    if url.startswith(SPANNER_PREFIX):
        from storage.spanner import migrate as migrate_spanner

        try:
            from storage.spanner import DatabasePath

            path = DatabasePath.parse(url)
        except ValueError as exc:
            raise UnsupportedStorageUrl(str(exc)) from exc
        return migrate_spanner(path)
    open_repository(url, create=True).close()
    return None


def open_dead_letters(url: str) -> DeadLetterStore:
    """The dead letters of store notifications (storage.dead_letters) in the store the URL
    names: the same SQLite file or Spanner database as the accounts; memory:// keeps them
    in this process."""
    if url.startswith(SQLITE_PREFIX):
        from storage.sqlite.dead_letters import SqliteDeadLetters

        return SqliteDeadLetters(url[len(SQLITE_PREFIX) :])
    if url == MEMORY_URL:
        from storage.memory.dead_letters import MemoryDeadLetters

        return MemoryDeadLetters()
    if url.startswith(SPANNER_PREFIX):
        from storage.spanner.dead_letters import SpannerDeadLetters

        try:
            return SpannerDeadLetters(url)
        except ValueError as exc:
            raise UnsupportedStorageUrl(str(exc)) from exc
    raise UnsupportedStorageUrl(f"unsupported storage URL {url!r}")


def open_account_links(url: str) -> AccountLinks:
    """The store accounts linked to users (storage.account_links) in the store the URL
    names; memory:// keeps them in this process."""
    if url.startswith(SQLITE_PREFIX):
        from storage.sqlite.account_links import SqliteAccountLinks

        return SqliteAccountLinks(url[len(SQLITE_PREFIX) :])
    if url == MEMORY_URL:
        from storage.memory.account_links import MemoryAccountLinks

        return MemoryAccountLinks()
    if url.startswith(SPANNER_PREFIX):
        from storage.spanner.account_links import SpannerAccountLinks

        try:
            return SpannerAccountLinks(url)
        except ValueError as exc:
            raise UnsupportedStorageUrl(str(exc)) from exc
    raise UnsupportedStorageUrl(f"unsupported storage URL {url!r}")

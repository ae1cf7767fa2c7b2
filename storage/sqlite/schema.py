"""Schema migrations of the SQLite backend, applied whenever a repository is opened: the
files in migrations/ (NNNN_name.sql) in filename order, each recorded in
`schema_migrations`, all under one write lock so concurrent openers apply each once."""

from __future__ import annotations

import functools
import importlib.resources
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from storage.sqlite.codec import encode_ts
from storage.sqlite.connection import rollback

_PACKAGE = __package__ or "storage.sqlite"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


@functools.cache
def migrations() -> tuple[Migration, ...]:
    """The migration files of this package, in filename (= version) order."""
    directory = importlib.resources.files(_PACKAGE).joinpath("migrations")
    found: list[Migration] = []
    for entry in directory.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        prefix = entry.name.partition("_")[0]
        if not prefix.isdigit():
            raise ValueError(f"migration {entry.name}: name must start with a version number")
        name = entry.name.removesuffix(".sql")
        found.append(Migration(int(prefix), name, entry.read_text(encoding="utf-8")))
    found.sort(key=lambda migration: migration.name)
    versions = [migration.version for migration in found]
    if versions != sorted(set(versions)):
        raise ValueError(f"migration versions must be unique and zero-padded: {versions}")
    return tuple(found)


def statements(script: str) -> Iterator[str]:
    """Splits a SQL script into statements (sqlite3.executescript would commit the
    surrounding transaction first)."""
    start = 0
    for index, char in enumerate(script):
        if char == ";" and sqlite3.complete_statement(script[start : index + 1]):
            yield script[start : index + 1].strip()
            start = index + 1
    rest = [
        line
        for line in script[start:].splitlines()
        if line.strip() and not line.strip().startswith("--")
    ]
    if rest:
        raise ValueError("migration ends with an incomplete SQL statement")


def migrate(connection: sqlite3.Connection) -> None:
    """Applies the migrations not yet recorded in `schema_migrations`, in one transaction."""
    # The write lock is taken before looking at what is applied, so of several processes
    # opening the same file at once exactly one applies each migration.
    connection.execute("BEGIN IMMEDIATE")
    try:
        connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        applied = {
            int(row[0]) for row in connection.execute("SELECT version FROM schema_migrations")
        }
        for migration in migrations():
            if migration.version in applied:
                continue
            for statement in statements(migration.sql):
                connection.execute(statement)
            connection.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, encode_ts(datetime.now(UTC))),
            )
        connection.execute("COMMIT")
    except BaseException:
        rollback(connection)
        raise

"""Schema migrations of the SQLite backend: the files in migrations/ (NNNN_name.sql) in
filename order, each recorded in `schema_migrations`. They are applied only by the
explicit creating step (SqliteRepository(create=True): `entitlements migrate`,
`seed-demo`, the parent of the workers), all in one write transaction so that concurrent
openers apply each once; a server's repository only checks that none is missing."""

from __future__ import annotations

import functools
import importlib.resources
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from storage.sqlite.codec import encode_ts

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


def missing(connection: sqlite3.Connection) -> list[str]:
    """The names of the migrations of this build not recorded in the database."""
    known = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    ).fetchone()
    applied = (
        {int(row[0]) for row in connection.execute("SELECT version FROM schema_migrations")}
        if known
        else set()
    )
    return [migration.name for migration in migrations() if migration.version not in applied]


def apply_pending(connection: sqlite3.Connection) -> list[str]:
    """Applies the migrations not yet recorded in `schema_migrations` and returns their
    names. Runs in the caller's write transaction (BEGIN IMMEDIATE): the write lock is
    taken before looking at what is applied, so of several processes opening the same
    file at once exactly one applies each migration."""
    connection.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    applied = {int(row[0]) for row in connection.execute("SELECT version FROM schema_migrations")}
    names: list[str] = []
    for migration in migrations():
        if migration.version in applied:
            continue
        for statement in statements(migration.sql):
            connection.execute(statement)
        connection.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            (migration.version, migration.name, encode_ts(datetime.now(UTC))),
        )
        names.append(migration.name)
    return names

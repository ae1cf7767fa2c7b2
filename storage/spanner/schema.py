"""Schema migrations for the Spanner backend.

The files in migrations/ (NNNN_name.sql, GoogleSQL DDL, statements separated by `;`)
are applied in version order by `migrate` (the `entitlements migrate` command), each
recorded in SchemaMigrations once it ran. DDL is not transactional on Spanner and a
migration and its record cannot be one atomic step, so a migration interrupted before it
was recorded runs again in full: every statement must be safe to run twice
(`CREATE ... IF NOT EXISTS`). Concurrent migrators are safe for the same reason.

The repository does not migrate by itself (a schema change takes seconds to minutes on
Cloud Spanner and needs the admin role the service should not have); it checks on first
use that every migration it knows was applied and otherwise fails with SchemaNotReady,
which names the command to run. A database migrated by a newer build (more versions) is
accepted, so old and new servers can run side by side during a rollout.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.resources
import os
import re
from dataclasses import dataclass

from google.api_core import exceptions as api_exceptions
from google.cloud import spanner
from google.cloud.spanner_v1.database import Database
from google.cloud.spanner_v1.transaction import Transaction

from service.domain.deadlines import within_store_deadline
from storage.spanner.client import (
    EMULATOR_HOST_ENV,
    DatabasePath,
    SchemaNotReady,
    database_handle,
    new_client,
    store_call,
)

MIGRATIONS_TABLE = "SchemaMigrations"
_CREATE_MIGRATIONS_TABLE = f"""CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (
    Version INT64 NOT NULL,
    Name STRING(MAX) NOT NULL,
    AppliedAt TIMESTAMP NOT NULL OPTIONS (allow_commit_timestamp = true),
) PRIMARY KEY (Version)"""

# Long-running DDL on Cloud Spanner can take minutes (backfilling an index).
DEFAULT_DDL_TIMEOUT = 1800.0
_QUERY_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def split_statements(script: str) -> tuple[str, ...]:
    """The DDL statements of a migration file: `--` comments removed, split on `;`
    (our DDL has no string literals, so neither can appear inside one)."""
    text = "\n".join(line.split("--", 1)[0] for line in script.splitlines())
    return tuple(" ".join(s.split()) for s in text.split(";") if s.strip())


@functools.cache
def migrations() -> tuple[Migration, ...]:
    """The migration files of this package, in version order."""
    directory = importlib.resources.files(__package__ or "storage.spanner").joinpath("migrations")
    found: list[Migration] = []
    for entry in directory.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = re.fullmatch(r"(\d{4})_[a-z0-9_]+\.sql", entry.name)
        if match is None:
            raise ValueError(f"migration {entry.name}: expected NNNN_name.sql")
        statements = split_statements(entry.read_text(encoding="utf-8"))
        if not statements:
            raise ValueError(f"migration {entry.name} has no statements")
        found.append(Migration(int(match.group(1)), entry.name.removesuffix(".sql"), statements))
    found.sort(key=lambda migration: migration.version)
    versions = [migration.version for migration in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"migration versions must be unique: {versions}")
    return tuple(found)


# The queries `applied_versions` sends (module constants so that tests can answer them).
TABLES_QUERY = (
    "SELECT TABLE_NAME FROM INFORMATION_SCHEMA.TABLES"
    " WHERE TABLE_SCHEMA = '' AND TABLE_NAME = @name"
)
VERSIONS_QUERY = f"SELECT Version FROM {MIGRATIONS_TABLE}"


def applied_versions(database: Database) -> set[int] | None:
    """The versions recorded in SchemaMigrations, or None when the table is missing."""
    with database.snapshot() as snapshot:
        tables = list(
            snapshot.execute_sql(
                TABLES_QUERY,
                params={"name": MIGRATIONS_TABLE},
                param_types={"name": spanner.param_types.STRING},
                request_options={"request_tag": "schema-tables"},
                timeout=_QUERY_TIMEOUT,
            )
        )
    if not tables:
        return None
    with database.snapshot() as snapshot:
        rows = snapshot.execute_sql(
            VERSIONS_QUERY,
            request_options={"request_tag": "schema-versions"},
            timeout=_QUERY_TIMEOUT,
        )
        return {int(row[0]) for row in rows}


def pending(applied: set[int] | None) -> list[Migration]:
    return [m for m in migrations() if applied is None or m.version not in applied]


def ensure_ready(database: Database, path: DatabasePath) -> None:
    """Raises SchemaNotReady unless every migration of this build was applied."""
    missing = pending(applied_versions(database))
    if missing:
        names = ", ".join(m.name for m in missing)
        raise SchemaNotReady(
            f"spanner database {path.name} lacks schema migrations {names}: run "
            f"`entitlements migrate --storage {path.url}`"
        )


def migrate(
    path: str | DatabasePath,
    *,
    endpoint: str | None = None,
    timeout: float = DEFAULT_DDL_TIMEOUT,
) -> list[str]:
    """Applies the pending schema migrations to the database (`entitlements migrate`);
    returns the names of those applied, empty when it was up to date. Against an emulator
    it first creates the instance and the database if they are missing."""
    database_path = path if isinstance(path, DatabasePath) else DatabasePath.parse(path)
    with within_store_deadline(timeout), store_call(database_path, "migration", timeout):
        create_on_emulator(database_path, endpoint, timeout)
        return apply_migrations(database_handle(database_path, endpoint), timeout=timeout)


def create_on_emulator(path: DatabasePath, endpoint: str | None, timeout: float) -> bool:
    """When the client talks to an emulator ($SPANNER_EMULATOR_HOST or `endpoint`),
    creates the instance and the database if they are missing, so that one `migrate`
    prepares a fresh emulator. Does nothing against Cloud Spanner (creating an instance
    or a database there is an operator's decision). Returns whether it created one."""
    if endpoint is None and not os.environ.get(EMULATOR_HOST_ENV):
        return False
    client = new_client(path.project, endpoint)
    created = False
    instance = client.instance(
        path.instance,
        configuration_name=f"projects/{path.project}/instanceConfigs/emulator-config",
        node_count=1,
    )
    if not instance.exists():
        with contextlib.suppress(api_exceptions.AlreadyExists):
            instance.create().result(timeout)
            created = True
    database = instance.database(path.database)
    if not database.exists():
        with contextlib.suppress(api_exceptions.AlreadyExists):
            database.create().result(timeout)
            created = True
    return created


def apply_migrations(database: Database, *, timeout: float = DEFAULT_DDL_TIMEOUT) -> list[str]:
    """Applies the pending migrations in order and records each; returns their names
    (empty when the schema was up to date, in which case nothing is changed)."""
    applied = applied_versions(database)
    if applied is None:
        database.update_ddl([_CREATE_MIGRATIONS_TABLE]).result(timeout)
        applied = set()
    done: list[str] = []
    for migration in pending(applied):
        database.update_ddl(list(migration.statements)).result(timeout)

        def record(transaction: Transaction, migration: Migration = migration) -> None:
            transaction.insert_or_update(
                MIGRATIONS_TABLE,
                columns=("Version", "Name", "AppliedAt"),
                values=[(migration.version, migration.name, spanner.COMMIT_TIMESTAMP)],
            )

        database.run_in_transaction(record, transaction_tag="schema-migrate")
        done.append(migration.name)
    return done

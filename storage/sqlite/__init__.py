"""SQLite backend (standard library sqlite3): the embedded default.

The database runs in WAL mode with synchronous=FULL, so a write is on disk before
`apply` returns and survives kill -9 (and power loss). Each thread gets its own
connection, since the gRPC server calls the repository from a thread pool; WAL lets
readers run alongside the single writer. Writes take the write lock up front
(BEGIN IMMEDIATE), so concurrent updates of one user serialize instead of failing; a call
waits for a lock held elsewhere no longer than its budget (service.domain.deadlines).

`apply` keeps each processed request (user, kind, id) with its fingerprint, its response
as JSON text and the version it wrote, in the same transaction as the state, so a replay
is answered from there and a crash can never keep the state without the key or the other
way round. History entries are appended in that transaction too. Neither is part of
AccountState, so writing a state never deletes them.

Creating the database is an explicit step: SqliteRepository(path, create=True) creates
the file (mode 0600) and applies the migrations in migrations/ (NNNN_name.sql, in filename
order, each recorded in `schema_migrations`, all under one write lock so concurrent
openers apply each once). A server's repository (create=False) opens an existing,
migrated file only, so a deleted data directory is a store failure, never a new empty
database. Faults of the file (read-only, corrupt, I/O, disk full, deleted) are
StoreUnavailable, and a connection that met one is replaced, so the store recovers by
itself once the fault is fixed.

Modules: repository.py (SqliteRepository), connection.py (per-thread connections, lock
waits, errors), schema.py (migrations), queries.py (reading and writing a user's rows),
codec.py (how values are stored).
"""

from storage.sqlite.connection import DatabaseNotFound, SchemaNotReady
from storage.sqlite.repository import SqliteRepository

__all__ = ["DatabaseNotFound", "SchemaNotReady", "SqliteRepository"]

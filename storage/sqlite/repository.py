"""SqliteRepository: the AccountRepository on one SQLite database file (see the package
docstring for durability, locking and idempotency)."""

from __future__ import annotations

import dataclasses
import sqlite3
from datetime import datetime
from pathlib import Path

from service.domain.account import AccountState, UserState
from storage.repository import (
    AccountChange,
    AccountMutation,
    Applied,
    HistoryEntry,
    IdempotencyConflict,
    IdempotencyKey,
    StoreUnavailable,
    household_membership,
)
from storage.rows import dump_response, integer, load_response
from storage.sqlite import queries, schema
from storage.sqlite.codec import encode_ts
from storage.sqlite.connection import (
    DEFAULT_BUSY_TIMEOUT_MS,
    Connections,
    rollback,
    translate_errors,
)


class SqliteRepository:
    """An AccountRepository on one SQLite database file."""

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> None:
        if str(path) == ":memory:" or str(path).startswith("file:"):
            # Every thread has its own connection, so it must be a file they all share.
            raise ValueError("SqliteRepository needs a database file path")
        self._path = Path(path)
        self._connections = Connections(self._path, busy_timeout_ms)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        try:
            connection = self._connection()
            with translate_errors():
                schema.migrate(connection)
        except BaseException:
            self.close()
            raise

    # -- AccountRepository -------------------------------------------------------------

    def load(self, user_id: str, *, min_version: int = 0) -> UserState:
        connection = self._connection()
        with translate_errors():
            # One statement reads a consistent snapshot by itself; a household member's
            # state and the manager's subscriptions are read again in one transaction.
            account = queries.read_account(connection, user_id)
            if household_membership(account) is None:
                return UserState(account, None)
            connection.execute("BEGIN")
            try:
                account = queries.read_account(connection, user_id)
                household = queries.read_household(connection, account)
                connection.execute("COMMIT")
            except BaseException:
                rollback(connection)
                raise
        return UserState(account, household)

    def update(self, user_id: str, change: AccountChange) -> AccountState:
        connection = self._connection()
        with translate_errors():
            connection.execute("BEGIN IMMEDIATE")
        try:
            with translate_errors():
                current = queries.read_account(connection, user_id)
            # Outside translate_errors: whatever `change` raises propagates unchanged.
            desired = change(current)
            stored = dataclasses.replace(desired, user_id=user_id, version=current.version + 1)
            with translate_errors():
                queries.write_account(connection, stored)
                connection.execute("COMMIT")
        except BaseException:
            rollback(connection)
            raise
        return stored

    def apply(
        self,
        user_id: str,
        key: IdempotencyKey,
        mutate: AccountMutation,
        recorded_at: datetime,
    ) -> Applied:
        encode_ts(recorded_at)  # a naive time fails before any transaction
        connection = self._connection()
        with translate_errors():
            connection.execute("BEGIN IMMEDIATE")
        try:
            with translate_errors():
                seen = queries.read_replay(connection, user_id, key)
                current = queries.read_account(connection, user_id)
            if seen is not None:
                fingerprint, response, version = seen
                if fingerprint != key.fingerprint:
                    raise IdempotencyConflict(f"{key.kind} id reused with another request")
                replay = Applied(current, integer(version), load_response(response), replayed=True)
                with translate_errors():
                    connection.execute("COMMIT")  # wrote nothing
                return replay
            # Outside translate_errors: whatever `mutate` raises propagates unchanged.
            mutation = mutate(current)
            version = current.version + 1
            stored = dataclasses.replace(mutation.state, user_id=user_id, version=version)
            response = dump_response(mutation.response)
            with translate_errors():
                queries.write_account(connection, stored)
                queries.write_request(connection, user_id, key, response, version, recorded_at)
                queries.append_history(connection, user_id, mutation.history, version, recorded_at)
                connection.execute("COMMIT")
        except BaseException:
            rollback(connection)
            raise
        # Through JSON, like a replay, so the first answer and its replays are equal.
        return Applied(stored, version, load_response(response), replayed=False)

    def history(self, user_id: str) -> list[HistoryEntry]:
        connection = self._connection()
        with translate_errors():
            return queries.read_history(connection, user_id)

    def check(self) -> None:
        connection = self._connection()
        try:
            connection.execute("SELECT count(*) FROM schema_migrations").fetchone()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite store not readable: {exc}") from exc

    def close(self) -> None:
        self._connections.close()

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        return self._connections.get()

"""SqliteRepository: the AccountRepository on one SQLite database file (see the package
docstring for durability, locking and idempotency)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from service.domain.account import UserState
from service.domain.errors import StoreUnavailable
from storage.apply import AppliesWrites, IdempotentWrite
from storage.feed import BATCH_LIMIT, ChangeBatch
from storage.repository import Applied, HistoryEntry, household_membership
from storage.sqlite import queries, schema
from storage.sqlite.connection import (
    DEFAULT_BUSY_TIMEOUT_MS,
    Connections,
    LockWait,
    SchemaNotReady,
    create_database_file,
    is_busy,
    is_fault,
    is_unavailable,
    rollback,
    unavailable,
)

T = TypeVar("T")

# Free space below which the disk counts as full for writes (check_writable): a write
# appends a few pages per table it touches to the WAL.
MIN_FREE_BYTES = 256 * 1024


class SqliteRepository(AppliesWrites):
    """An AccountRepository on one SQLite database file.

    `create=True` (the explicit creating step: `entitlements migrate`, `seed-demo`, the
    parent process before it forks workers, tests) creates the file (mode 0600) and its
    directory when missing and applies pending migrations. `create=False` (a server's
    workers) opens an existing, migrated file only: a missing file is DatabaseNotFound and
    a missing migration SchemaNotReady (both StoreUnavailable), never a new database.

    `busy_timeout_ms` is the longest a call waits for a lock held elsewhere; a call with
    a budget (service.domain.deadlines) waits no longer than what the budget has left.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        create: bool = True,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
    ) -> None:
        if str(path) == ":memory:" or str(path).startswith("file:"):
            # Every thread has its own connection, so it must be a file they all share.
            raise ValueError("SqliteRepository needs a database file path")
        # Absolute: the connections of later threads open the same file whatever the
        # working directory is then.
        self._path = Path(os.path.abspath(path))
        self._busy_timeout_ms = busy_timeout_ms
        self._connections = Connections(self._path, busy_timeout_ms)
        # The migrations this repository applied when it was created (create=True).
        self.applied_migrations: tuple[str, ...] = ()
        try:
            if create:
                create_database_file(self._path)
                self.applied_migrations = tuple(self._write(schema.apply_pending))
            else:
                missing = self._read(schema.missing)
                if missing:
                    raise SchemaNotReady(
                        f"sqlite database {self._path} lacks migrations {', '.join(missing)}: "
                        f"run `entitlements migrate --storage sqlite:///{self._path}`"
                    )
        except BaseException:
            self.close()
            raise

    # -- AccountRepository -------------------------------------------------------------

    def load(self, user_id: str, *, min_version: int = 0, stale_ok: bool = False) -> UserState:
        def read(connection: sqlite3.Connection) -> UserState:
            # One statement reads a consistent snapshot by itself; a household member's
            # state and the manager's subscriptions are read again in one transaction.
            account = queries.read_account(connection, user_id)
            if household_membership(account) is None:
                return UserState(account, None)
            connection.execute("BEGIN")
            account = queries.read_account(connection, user_id)
            household = queries.read_household(connection, account)
            connection.execute("COMMIT")
            return UserState(account, household)

        return self._read(read)

    def _run_write(self, write: IdempotentWrite) -> Applied:
        # A replay writes nothing; committed all the same.
        return self._write(lambda connection: write.run(queries.Write(connection)))

    def history(self, user_id: str) -> list[HistoryEntry]:
        return self._read(lambda connection: queries.read_history(connection, user_id))

    # -- ChangeFeed (positions are change seqs) ------------------------------------------

    def feed_position(self) -> str:
        return str(self._read(queries.last_change))

    def read_changes(self, after: str, limit: int = BATCH_LIMIT) -> ChangeBatch:
        position = int(after)
        return self._read(lambda connection: queries.read_changes(connection, position, limit))

    def check(self) -> None:
        """Raises StoreUnavailable unless the database answers a read (readiness)."""
        try:
            self._read(
                lambda connection: connection.execute(
                    "SELECT count(*) FROM schema_migrations"
                ).fetchone()
            )
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite store not readable: {exc}") from exc

    def check_writable(self) -> None:
        """check(), then whether a write could succeed now, changing nothing (readiness):
        the disk has room for one, and a new connection - what a thread opening one now
        gets; a file made read-only opens read-only - takes the write lock and runs a write
        statement that matches no row, then rolls back. A write lock held elsewhere is
        contention, not a fault: the store counts as writable (writes wait for the lock
        within their budget)."""
        self.check()
        free = _free_bytes(self._path.parent)
        if free < MIN_FREE_BYTES:
            raise StoreUnavailable(
                f"sqlite store not writable: disk full ({free} bytes free in {self._path.parent})"
            )
        connection = self._connections.open_unshared()
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("DELETE FROM schema_migrations WHERE 0")
        except sqlite3.Error as exc:
            if not is_busy(exc):
                raise StoreUnavailable(f"sqlite store not writable: {exc}") from exc
        finally:
            rollback(connection)
            connection.close()

    def close(self) -> None:
        self._connections.close()

    # -- running a call ----------------------------------------------------------------

    def _read(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """body(connection) on this thread's connection: read statements, in their own
        transaction if any. See _write for lock waits, faults and retries."""
        wait: LockWait | None = None
        retried = False
        while True:
            opened, reused = self._connections.acquire()
            connection = opened.connection
            try:
                return body(connection)
            except sqlite3.Error as exc:
                rollback(connection)
                if is_busy(exc):
                    wait = wait or LockWait(self._busy_timeout_ms)
                    wait.pause(exc)
                    continue
                if not is_fault(exc):
                    raise
                self._connections.discard(opened)
                if reused and not retried:
                    retried = True
                    continue
                raise unavailable(exc) from exc
            except BaseException:
                rollback(connection)
                raise
            finally:
                self._connections.release(opened)

    def _write(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """body(connection) in a write transaction (BEGIN IMMEDIATE ... COMMIT) on this
        thread's connection, its result once committed.

        - The write lock held elsewhere: the transaction is tried again after a pause
          until the call's budget ends (LockWait), then DeadlineExceeded (the budget) or
          StoreUnavailable (the busy timeout).
        - A fault (read-only, corrupt, I/O, disk full...) closes the connection: the next
          call opens a new one. When the connection had been used before (opened before
          the fault was fixed, say read-only), the transaction is tried once more on a new
          connection: nothing was committed, and `body` may run twice (mutations are pure).
        - Before COMMIT, the file at the path must still be the connection's: a write is
          never acknowledged into a deleted database file.
        - Whatever else `body` raises rolls back and propagates unchanged; a sqlite error
          that is no store fault (a constraint, a bug) too.
        """
        wait: LockWait | None = None
        retried = False
        while True:
            opened, reused = self._connections.acquire()
            connection = opened.connection
            committing = False
            try:
                connection.execute("BEGIN IMMEDIATE")
                result = body(connection)
                self._connections.verify(opened)
                committing = True
                connection.execute("COMMIT")
                return result
            except sqlite3.Error as exc:
                rollback(connection)
                if is_busy(exc) and not committing:
                    wait = wait or LockWait(self._busy_timeout_ms)
                    wait.pause(exc)
                    continue
                if not is_unavailable(exc):
                    raise
                if is_fault(exc):
                    self._connections.discard(opened)
                    # Not after a failed COMMIT: whether it happened is not certain.
                    if reused and not retried and not committing:
                        retried = True
                        continue
                raise unavailable(exc) from exc
            except BaseException:
                rollback(connection)
                raise
            finally:
                self._connections.release(opened)


def _free_bytes(directory: Path) -> int:
    """Bytes the service may still write in `directory`'s file system (root may use the
    blocks reserved for it)."""
    try:
        stats = os.statvfs(directory)
    except OSError as exc:
        raise StoreUnavailable(f"sqlite: cannot reach {directory}: {exc}") from exc
    blocks = stats.f_bfree if os.geteuid() == 0 else stats.f_bavail
    return blocks * stats.f_frsize

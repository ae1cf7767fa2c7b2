"""SQLite connections: one per thread on one database file, in WAL mode with durable
commits; sqlite errors meaning "cannot serve now" as StoreUnavailable; rollback."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from storage.repository import StoreError, StoreUnavailable

DEFAULT_BUSY_TIMEOUT_MS = 5000

# Primary result codes meaning "the store cannot serve this now; retry may succeed".
_UNAVAILABLE_CODES = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_PROTOCOL,
        sqlite3.SQLITE_FULL,
    }
)


class Connections:
    """The connections of one repository to its database file: each thread gets its own,
    opened on first use, and `close` closes them all."""

    def __init__(self, path: Path, busy_timeout_ms: int) -> None:
        self._path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._closed = False

    def get(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        local = self._local
        connection: sqlite3.Connection | None = getattr(local, "connection", None)
        if connection is not None and not self._closed:
            return connection
        if self._closed:
            raise StoreUnavailable("sqlite repository is closed")
        with translate_errors():
            connection = self._open()
        with self._lock:
            if self._closed:
                connection.close()
                raise StoreUnavailable("sqlite repository is closed")
            self._connections.append(connection)
        local.connection = connection
        return connection

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
            self._local = threading.local()
        for connection in connections:
            with contextlib.suppress(sqlite3.Error):
                connection.close()

    def _open(self) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self._path,
            timeout=self._busy_timeout_ms / 1000,
            # Autocommit at the driver level: the backend issues BEGIN/COMMIT itself.
            isolation_level=None,
            # Only the owning thread uses a connection; close() may close it from another.
            check_same_thread=False,
        )
        try:
            connection.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            connection.execute("PRAGMA foreign_keys = ON")
            self._ensure_wal(connection)
            # Per connection: with WAL, FULL syncs the log on every commit (durable commits).
            connection.execute("PRAGMA synchronous = FULL")
        except BaseException:
            connection.close()
            raise
        return connection

    def _ensure_wal(self, connection: sqlite3.Connection) -> None:
        """Switches the file to WAL mode (persistent, so usually already done).

        Switching needs an exclusive lock. When another connection holds a write lock on a
        file still in rollback-journal mode, SQLite fails at once instead of calling the
        busy handler (it would deadlock), so processes opening a new file at the same time
        retry here until the busy timeout.
        """
        deadline = time.monotonic() + self._busy_timeout_ms / 1000
        delay = 0.001
        while True:
            try:
                mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()
            except sqlite3.OperationalError as exc:
                if not is_unavailable(exc) or time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
                continue
            if mode != ("wal",):
                raise StoreError(f"sqlite: cannot enable WAL journal mode (got {mode})")
            return


# -- errors and transactions -------------------------------------------------------------


def is_unavailable(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return (code & 0xFF) in _UNAVAILABLE_CODES
    message = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and (
        "locked" in message or "unable to open" in message
    )


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Turns sqlite errors meaning "cannot serve now" (locked, busy, cannot open, I/O)
    into StoreUnavailable; anything else (a bug, a constraint) propagates as is."""
    try:
        yield
    except sqlite3.Error as exc:
        if is_unavailable(exc):
            raise StoreUnavailable(f"sqlite store unavailable: {exc}") from exc
        raise


def rollback(connection: sqlite3.Connection) -> None:
    if connection.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            connection.execute("ROLLBACK")

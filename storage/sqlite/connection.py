"""SQLite connections: one per thread on one existing database file, in WAL mode with
durable commits; how long a call waits for a lock (its budget); which sqlite errors mean
"cannot serve now" (StoreUnavailable) and which make a connection unfit to keep.

- Waiting for a lock follows the call's budget (store_seconds_left(), capped by
  the busy timeout; the busy timeout alone when the call has none): connections are
  opened with SQLite's own busy wait off and the repository retries on SQLITE_BUSY until
  the budget ends, so a store thread is free again when its RPC gives up.
- A connection never creates the database file: it opens the file at the path as it is
  (creating and migrating is SqliteRepository(create=True)'s job), and before each use it
  checks that the file at the path is still the one it opened. A deleted file (a removed
  data directory) is a store failure, not a write acknowledged into an unlinked file; a
  file put back at the path (restored) is followed by a new connection.
- A connection that met a fault (read-only, corrupt, I/O error, disk full, cannot open)
  is closed; the next call opens a new one, so the store recovers by itself once the
  fault is fixed (a connection opened read-only would otherwise stay read-only).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from service.domain.deadlines import store_seconds_left
from service.domain.errors import DeadlineExceeded, StoreError, StoreUnavailable
from storage.files import make_private_directory

DEFAULT_BUSY_TIMEOUT_MS = 5000
# The database file as created (its -wal and -shm files get the same mode from SQLite):
# user ids are personal data, readable by the service's user only.
DATABASE_FILE_MODE = 0o600

# Primary result codes of lock contention: wait (within the budget) and try again.
_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
# Primary result codes of a store that cannot serve now (its file, disk or permissions):
# StoreUnavailable, and the connection that met one is closed and replaced on next use.
_FAULT_CODES = frozenset(
    {
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_PROTOCOL,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_CORRUPT,
        sqlite3.SQLITE_NOTADB,
        sqlite3.SQLITE_PERM,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_NOLFS,
    }
)
# Lock polling: the first pause and the longest (SQLite's own busy handler sleeps 1 ms
# growing to 100 ms; shorter pauses hand the lock over sooner).
_FIRST_PAUSE_SECONDS = 0.001
_MAX_PAUSE_SECONDS = 0.02


class DatabaseNotFound(StoreUnavailable):
    """The database file does not exist (never created, or deleted while serving)."""


class SchemaNotReady(StoreUnavailable):
    """The database file exists but lacks migrations this build needs."""


# -- errors ------------------------------------------------------------------------------


def _primary_code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def is_busy(exc: sqlite3.Error) -> bool:
    code = _primary_code(exc)
    if code is not None:
        return code in _BUSY_CODES
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc).lower()


def is_fault(exc: sqlite3.Error) -> bool:
    """The file, disk or permissions failed (not the SQL): the connection is not kept."""
    code = _primary_code(exc)
    if code is not None and code in _FAULT_CODES:
        return True
    message = str(exc).lower()
    # The file at the path no longer has our tables (replaced by an empty or foreign
    # database): the store cannot serve, this is no bug in a statement.
    return (
        isinstance(exc, sqlite3.DatabaseError)
        and code in (None, sqlite3.SQLITE_ERROR)
        and "no such table" in message
    )


def is_unavailable(exc: sqlite3.Error) -> bool:
    """The store cannot serve this now and a retry may succeed: StoreUnavailable. Any
    other sqlite error (a constraint, a bug in a statement) propagates as is."""
    return is_busy(exc) or is_fault(exc)


def unavailable(exc: sqlite3.Error) -> StoreUnavailable:
    return StoreUnavailable(f"sqlite store unavailable: {exc}")


def rollback(connection: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):  # closed meanwhile: nothing to roll back
        if connection.in_transaction:
            connection.execute("ROLLBACK")


class LockWait:
    """How long one store call may still wait for a lock held elsewhere, from when it
    first found it held: what its budget has left (store_seconds_left()), at most
    the busy timeout; the busy timeout when it has no budget. Raises DeadlineExceeded at
    once when the budget is spent."""

    def __init__(self, busy_timeout_ms: int) -> None:
        budget = store_seconds_left()
        limit = busy_timeout_ms / 1000
        self._by_budget = budget is not None and budget < limit
        self._end = time.monotonic() + (budget if budget is not None and self._by_budget else limit)
        self._pause = _FIRST_PAUSE_SECONDS

    def pause(self, error: sqlite3.Error) -> None:
        """Sleeps before the next attempt; raises when the wait is over: DeadlineExceeded
        when the call's budget ended it, StoreUnavailable when the busy timeout did."""
        left = self._end - time.monotonic()
        if left <= 0:
            if self._by_budget:
                raise DeadlineExceeded(
                    f"sqlite: {error} (held elsewhere past the store call's budget)"
                ) from error
            raise unavailable(error) from error
        time.sleep(min(self._pause, left))
        self._pause = min(self._pause * 2, _MAX_PAUSE_SECONDS)


# -- creating the file -------------------------------------------------------------------


def create_database_file(path: Path) -> bool:
    """Creates an empty database file (an empty file is an empty SQLite database) with
    mode 0600, and its directory (0700); True if it did, False if a file was there already."""
    try:
        make_private_directory(path.parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, DATABASE_FILE_MODE)
    except FileExistsError:
        return False
    except OSError as exc:
        raise StoreUnavailable(f"sqlite: cannot create the database {path}: {exc}") from exc
    os.close(fd)
    return True


# -- connections -------------------------------------------------------------------------

# The file a connection opened: (device, inode).
_Identity = tuple[int, int]


@dataclass(slots=True)
class Opened:
    """A thread's connection and the file it opened; `in_use` while a call runs on it."""

    connection: sqlite3.Connection
    identity: _Identity
    in_use: bool = False


class Connections:
    """The connections of one repository to its database file: each thread gets its own,
    opened on first use (and again after a fault or when the file at the path changed).

    A call holds its thread's connection from `acquire` to `release`. `close` closes the
    connections no call holds at once and the others when their call releases them: a
    connection is never closed under a statement running on it in another thread."""

    def __init__(self, path: Path, busy_timeout_ms: int) -> None:
        self._path = path
        self._uri = f"{path.as_uri()}?mode=rw"  # open as it is: never create the file
        self._busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._lock = threading.Lock()
        self._opened: list[Opened] = []
        self._closed = False

    def acquire(self) -> tuple[Opened, bool]:
        """This thread's connection, held until `release`, and whether it was used before
        (False: just opened). Raises DatabaseNotFound when the file at the path is gone."""
        current: Opened | None = getattr(self._local, "opened", None)
        with self._lock:
            if self._closed:
                raise StoreUnavailable("sqlite repository is closed")
            if current is not None:
                current.in_use = True
        try:
            identity = self._identity()
            if current is not None:
                if current.identity == identity:
                    return current, True
                self._forget(current)  # another file is at the path now (restored)
            opened = self._open()
        except BaseException:
            if current is not None:
                self.release(current)
            raise
        opened.in_use = True
        with self._lock:
            if not self._closed:
                self._opened.append(opened)
                self._local.opened = opened
                return opened, False
        opened.connection.close()
        raise StoreUnavailable("sqlite repository is closed")

    def release(self, opened: Opened) -> None:
        """The call on `opened` ended; closes it if the repository was closed meanwhile."""
        with self._lock:
            opened.in_use = False
            closed = self._closed
        if closed:
            with contextlib.suppress(sqlite3.Error):
                opened.connection.close()

    def verify(self, opened: Opened) -> None:
        """Raises StoreUnavailable (and drops the connection) unless `opened` is still on
        the file at the path: called before a commit, so that no write is acknowledged
        into a file that was deleted meanwhile."""
        if self._identity() != opened.identity:
            self._forget(opened)
            raise StoreUnavailable(f"sqlite: the database file {self._path} was replaced")

    def discard(self, opened: Opened) -> None:
        """Closes this thread's connection `opened` (after a fault): the next call of the
        thread opens a new one."""
        self._forget(opened)

    def open_unshared(self) -> sqlite3.Connection:
        """A new connection that no thread keeps (the caller closes it): what a thread
        opening its connection now would get."""
        if self._closed:
            raise StoreUnavailable("sqlite repository is closed")
        return self._open().connection

    def close(self) -> None:
        with self._lock:
            self._closed = True
            opened, self._opened = self._opened, []
            self._local = threading.local()
            idle = [entry for entry in opened if not entry.in_use]
        for entry in idle:
            with contextlib.suppress(sqlite3.Error):
                entry.connection.close()

    def _forget(self, opened: Opened) -> None:
        """Closes `opened`, which this thread holds, for good."""
        with self._lock, contextlib.suppress(ValueError):
            self._opened.remove(opened)
        if getattr(self._local, "opened", None) is opened:
            self._local.opened = None
        with contextlib.suppress(sqlite3.Error):
            opened.connection.close()

    def _identity(self) -> _Identity:
        """The (device, inode) of the file at the path now; DatabaseNotFound if none
        (this thread's connection, on a file no longer reachable, is closed)."""
        try:
            stat = os.stat(self._path)
        except FileNotFoundError:
            current: Opened | None = getattr(self._local, "opened", None)
            if current is not None:
                self._forget(current)
            # What the operator reads in the outage log line: a lost file is restored, not
            # re-created (migrate would make an empty database: every user a free user).
            raise DatabaseNotFound(
                f"sqlite database {self._path} does not exist (deleted, or its volume lost?): "
                f"restore it from a backup at that path (docs/RUNBOOK.md, "
                f"EntitlementsStoreNotReady); the workers serve it again once it is there. "
                f"Do not run `entitlements migrate` for a lost database: it creates an empty "
                f"one, in which every user is a free user"
            ) from None
        except OSError as exc:
            raise StoreUnavailable(f"sqlite: cannot reach {self._path}: {exc}") from exc
        return stat.st_dev, stat.st_ino

    def _open(self) -> Opened:
        try:
            connection = sqlite3.connect(
                self._uri,
                uri=True,
                # SQLite's busy wait off: the repository waits for locks itself, within
                # each call's budget (LockWait).
                timeout=0,
                # Autocommit at the driver level: the backend issues BEGIN/COMMIT itself.
                isolation_level=None,
                # Only the owning thread uses a connection; close() closes idle ones from
                # another thread.
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise unavailable(exc) from exc
        try:
            identity = self._identity()
            connection.execute("PRAGMA foreign_keys = ON")
            self._ensure_wal(connection)
            # Per connection: with WAL, FULL syncs the log on every commit (durable commits).
            connection.execute("PRAGMA synchronous = FULL")
        except sqlite3.Error as exc:
            connection.close()
            if is_unavailable(exc):
                raise unavailable(exc) from exc
            raise
        except BaseException:
            connection.close()
            raise
        return Opened(connection, identity)

    def _ensure_wal(self, connection: sqlite3.Connection) -> None:
        """Switches the file to WAL mode (persistent, so usually already done).

        Switching needs an exclusive lock, and the file may be locked by another opener
        (a file still in rollback-journal mode fails at once rather than waiting), so this
        retries while the lock is held elsewhere, within the call's budget.
        """
        wait = LockWait(self._busy_timeout_ms)
        while True:
            try:
                mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise
                wait.pause(exc)
                continue
            if mode != ("wal",):
                raise StoreError(f"sqlite: cannot enable WAL journal mode (got {mode})")
            return

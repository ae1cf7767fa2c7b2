"""SQLite backend (standard library sqlite3): the embedded default.

The database runs in WAL mode with synchronous=FULL, so a write is on disk before
`update` returns and survives kill -9 (and power loss). Each thread gets its own
connection, since the gRPC server calls the repository from a thread pool; WAL lets
readers run alongside the single writer. Writes take the write lock up front
(BEGIN IMMEDIATE), so concurrent updates of one user serialize instead of failing.

`apply` keeps each processed request (user, kind, id) with its fingerprint, its response
as JSON text and the version it wrote, in the same transaction as the state, so a replay
is answered from there and a crash can never keep the state without the key or the other
way round. History entries are appended in that transaction too. Neither is part of
AccountState, so writing a state never deletes them.

The schema is created and migrated by the backend itself when it is constructed: the
files in migrations/ (NNNN_name.sql) are applied in filename order, each recorded in
`schema_migrations`, all under one write lock so concurrent openers apply each once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.resources
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from service.domain.account import (
    AccountState,
    Household,
    HouseholdRole,
    Subscription,
    UserState,
)
from storage.repository import (
    AccountChange,
    AccountMutation,
    Applied,
    HistoryEntry,
    IdempotencyConflict,
    IdempotencyKey,
    StoreError,
    StoreUnavailable,
)
from storage.rows import RowCodec, dump_response, integer, load_response, opt_text, text, utc

__all__ = ["SqliteRepository"]

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

# The tables holding the tuples of AccountState, rewritten on every write of the state.
# processed_requests and history are deliberately not among them.
_CHILD_TABLES = ("subscriptions", "grants", "redemptions", "household_memberships")

_SUBSCRIPTION_COLUMNS = (
    "subscription_id, plan_id, status, store, started_at, current_period_end, "
    "grace_period_end, auto_renew, last_event_at, offer_id"
)
_GRANT_COLUMNS = (
    "grant_id, kind, feature_id, plan_id, quota_value, starts_at, expires_at, revoked_at"
)
_REDEMPTION_COLUMNS = "offer_id, offer_group, redeemed_at, store"
_MEMBERSHIP_COLUMNS = "household_id, role, manager_user_id, joined_at, left_at"
_HISTORY_COLUMNS = "kind, reference, effective_at, recorded_at, version, summary"


class SqliteRepository:
    """An AccountRepository on one SQLite database file."""

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> None:
        if str(path) == ":memory:" or str(path).startswith("file:"):
            # Every thread has its own connection, so it must be a file they all share.
            raise ValueError("SqliteRepository needs a database file path")
        self._path = Path(path)
        self._busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._closed = False
        self._path.parent.mkdir(parents=True, exist_ok=True)
        try:
            connection = self._connection()
            with _translate_errors():
                _migrate(connection)
        except BaseException:
            self.close()
            raise

    # -- AccountRepository -------------------------------------------------------------

    def load(self, user_id: str, *, min_version: int = 0) -> UserState:
        connection = self._connection()
        with _translate_errors():
            connection.execute("BEGIN")
            try:
                account = _read_account(connection, user_id)
                household = _read_household(connection, account)
                connection.execute("COMMIT")
            except BaseException:
                _rollback(connection)
                raise
        return UserState(account, household)

    def update(self, user_id: str, change: AccountChange) -> AccountState:
        connection = self._connection()
        with _translate_errors():
            connection.execute("BEGIN IMMEDIATE")
        try:
            with _translate_errors():
                current = _read_account(connection, user_id)
            # Outside _translate_errors: whatever `change` raises propagates unchanged.
            desired = change(current)
            stored = dataclasses.replace(desired, user_id=user_id, version=current.version + 1)
            with _translate_errors():
                _write_account(connection, stored)
                connection.execute("COMMIT")
        except BaseException:
            _rollback(connection)
            raise
        return stored

    def apply(
        self,
        user_id: str,
        key: IdempotencyKey,
        mutate: AccountMutation,
        recorded_at: datetime,
    ) -> Applied:
        recorded = _encode_ts(recorded_at)  # a naive time fails before any transaction
        connection = self._connection()
        with _translate_errors():
            connection.execute("BEGIN IMMEDIATE")
        try:
            with _translate_errors():
                seen = connection.execute(
                    "SELECT fingerprint, response, version FROM processed_requests"
                    " WHERE user_id = ? AND kind = ? AND request_id = ?",
                    (user_id, key.kind, key.id),
                ).fetchone()
                current = _read_account(connection, user_id)
            if seen is not None:
                fingerprint, response, version = seen
                if fingerprint != key.fingerprint:
                    raise IdempotencyConflict(f"{key.kind} id reused with another request")
                replay = Applied(current, integer(version), load_response(response), replayed=True)
                with _translate_errors():
                    connection.execute("COMMIT")  # wrote nothing
                return replay
            # Outside _translate_errors: whatever `mutate` raises propagates unchanged.
            mutation = mutate(current)
            version = current.version + 1
            stored = dataclasses.replace(mutation.state, user_id=user_id, version=version)
            response = dump_response(mutation.response)
            history = [
                (
                    user_id,
                    draft.kind,
                    draft.reference,
                    _encode_ts(draft.effective_at),
                    recorded,
                    version,
                    draft.summary,
                )
                for draft in mutation.history
            ]
            with _translate_errors():
                _write_account(connection, stored)
                connection.execute(
                    "INSERT INTO processed_requests (user_id, kind, request_id, fingerprint,"
                    " response, version, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (user_id, key.kind, key.id, key.fingerprint, response, version, recorded),
                )
                connection.executemany(
                    f"INSERT INTO history (user_id, {_HISTORY_COLUMNS})"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    history,
                )
                connection.execute("COMMIT")
        except BaseException:
            _rollback(connection)
            raise
        # Through JSON, like a replay, so the first answer and its replays are equal.
        return Applied(stored, version, load_response(response), replayed=False)

    def history(self, user_id: str) -> list[HistoryEntry]:
        connection = self._connection()
        with _translate_errors():
            rows = connection.execute(
                f"SELECT {_HISTORY_COLUMNS} FROM history WHERE user_id = ? ORDER BY seq",
                (user_id,),
            ).fetchall()
        return [_ROWS.history_entry(row) for row in rows]

    def check(self) -> None:
        connection = self._connection()
        try:
            connection.execute("SELECT count(*) FROM schema_migrations").fetchone()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite store not readable: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
            self._local = threading.local()
        for connection in connections:
            with contextlib.suppress(sqlite3.Error):
                connection.close()

    # -- connections -------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        local = self._local
        connection: sqlite3.Connection | None = getattr(local, "connection", None)
        if connection is not None and not self._closed:
            return connection
        if self._closed:
            raise StoreUnavailable("sqlite repository is closed")
        with _translate_errors():
            connection = self._open()
        with self._lock:
            if self._closed:
                connection.close()
                raise StoreUnavailable("sqlite repository is closed")
            self._connections.append(connection)
        local.connection = connection
        return connection

    def _open(self) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self._path,
            timeout=self._busy_timeout_ms / 1000,
            # Autocommit at the driver level: this module issues BEGIN/COMMIT itself.
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
                if not _is_unavailable(exc) or time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
                continue
            if mode != ("wal",):
                raise StoreError(f"sqlite: cannot enable WAL journal mode (got {mode})")
            return


# -- errors and transactions -------------------------------------------------------------


def _is_unavailable(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return (code & 0xFF) in _UNAVAILABLE_CODES
    message = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and (
        "locked" in message or "unable to open" in message
    )


@contextlib.contextmanager
def _translate_errors() -> Iterator[None]:
    """Turns sqlite errors meaning "cannot serve now" (locked, busy, cannot open, I/O)
    into StoreUnavailable; anything else (a bug, a constraint) propagates as is."""
    try:
        yield
    except sqlite3.Error as exc:
        if _is_unavailable(exc):
            raise StoreUnavailable(f"sqlite store unavailable: {exc}") from exc
        raise


def _rollback(connection: sqlite3.Connection) -> None:
    if connection.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            connection.execute("ROLLBACK")


# -- migrations --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _Migration:
    version: int
    name: str
    sql: str


@functools.cache
def _migrations() -> tuple[_Migration, ...]:
    """The migration files of this package, in filename (= version) order."""
    directory = importlib.resources.files(__name__).joinpath("migrations")
    found: list[_Migration] = []
    for entry in directory.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        prefix = entry.name.partition("_")[0]
        if not prefix.isdigit():
            raise ValueError(f"migration {entry.name}: name must start with a version number")
        name = entry.name.removesuffix(".sql")
        found.append(_Migration(int(prefix), name, entry.read_text(encoding="utf-8")))
    found.sort(key=lambda migration: migration.name)
    versions = [migration.version for migration in found]
    if versions != sorted(set(versions)):
        raise ValueError(f"migration versions must be unique and zero-padded: {versions}")
    return tuple(found)


def _statements(script: str) -> Iterator[str]:
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


def _migrate(connection: sqlite3.Connection) -> None:
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
        for migration in _migrations():
            if migration.version in applied:
                continue
            for statement in _statements(migration.sql):
                connection.execute(statement)
            connection.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, _encode_ts(datetime.now(UTC))),
            )
        connection.execute("COMMIT")
    except BaseException:
        _rollback(connection)
        raise


# -- reading -----------------------------------------------------------------------------


def _read_account(connection: sqlite3.Connection, user_id: str) -> AccountState:
    user = connection.execute(
        "SELECT version, home_market, student_verified_until FROM users WHERE user_id = ?",
        (user_id,),
    ).fetchone()
    if user is None:
        return AccountState.new(user_id)
    version, home_market, student_verified_until = user
    grants = connection.execute(
        f"SELECT {_GRANT_COLUMNS} FROM grants WHERE user_id = ? ORDER BY position",
        (user_id,),
    ).fetchall()
    redemptions = connection.execute(
        f"SELECT {_REDEMPTION_COLUMNS} FROM redemptions WHERE user_id = ? ORDER BY position",
        (user_id,),
    ).fetchall()
    memberships = connection.execute(
        f"SELECT {_MEMBERSHIP_COLUMNS} FROM household_memberships"
        " WHERE user_id = ? ORDER BY position",
        (user_id,),
    ).fetchall()
    return AccountState(
        user_id=user_id,
        version=integer(version),
        home_market=opt_text(home_market),
        subscriptions=_read_subscriptions(connection, user_id),
        grants=tuple(_ROWS.grant(row) for row in grants),
        redemptions=tuple(_ROWS.redemption(row) for row in redemptions),
        memberships=tuple(_ROWS.membership(row) for row in memberships),
        student_verified_until=_ROWS.opt_decode_ts(student_verified_until),
    )


def _read_subscriptions(connection: sqlite3.Connection, user_id: str) -> tuple[Subscription, ...]:
    rows = connection.execute(
        f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE user_id = ? ORDER BY position",
        (user_id,),
    ).fetchall()
    return tuple(_ROWS.subscription(row) for row in rows)


def _read_household(connection: sqlite3.Connection, account: AccountState) -> Household | None:
    """The first current membership as a MEMBER, with the manager's subscriptions read in
    the caller's transaction."""
    for membership in account.memberships:
        if membership.role is HouseholdRole.MEMBER and membership.left_at is None:
            return Household(
                membership.household_id,
                membership.manager_user_id,
                _read_subscriptions(connection, membership.manager_user_id),
            )
    return None


# -- writing -----------------------------------------------------------------------------


def _write_account(connection: sqlite3.Connection, account: AccountState) -> None:
    """Stores `account` as is (version included), replacing all of the user's rows."""
    user_id = account.user_id
    connection.execute(
        "INSERT INTO users (user_id, version, home_market, student_verified_until)"
        " VALUES (?, ?, ?, ?)"
        " ON CONFLICT (user_id) DO UPDATE SET version = excluded.version,"
        " home_market = excluded.home_market,"
        " student_verified_until = excluded.student_verified_until",
        (
            user_id,
            account.version,
            account.home_market,
            _ROWS.opt_ts(account.student_verified_until),
        ),
    )
    for table in _CHILD_TABLES:
        connection.execute(f"DELETE FROM {table} WHERE user_id = ?", (user_id,))
    connection.executemany(
        f"INSERT INTO subscriptions (user_id, position, {_SUBSCRIPTION_COLUMNS})"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (user_id, position, *_ROWS.subscription_row(sub))
            for position, sub in enumerate(account.subscriptions)
        ],
    )
    connection.executemany(
        f"INSERT INTO grants (user_id, position, {_GRANT_COLUMNS})"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (user_id, position, *_ROWS.grant_row(grant))
            for position, grant in enumerate(account.grants)
        ],
    )
    connection.executemany(
        f"INSERT INTO redemptions (user_id, position, {_REDEMPTION_COLUMNS})"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [
            (user_id, position, *_ROWS.redemption_row(redemption))
            for position, redemption in enumerate(account.redemptions)
        ],
    )
    connection.executemany(
        f"INSERT INTO household_memberships (user_id, position, {_MEMBERSHIP_COLUMNS})"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (user_id, position, *_ROWS.membership_row(membership))
            for position, membership in enumerate(account.memberships)
        ],
    )


# -- values ------------------------------------------------------------------------------


def _encode_ts(value: datetime) -> str:
    """ISO 8601 in UTC with a fixed width, so stored timestamps also sort as text."""
    return utc(value).isoformat(timespec="microseconds")


def _decode_ts(value: object) -> datetime:
    parsed = datetime.fromisoformat(text(value))
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


# SQLite has no timestamp or boolean type: ISO text, and 0 or 1.
_ROWS = RowCodec(
    encode_ts=_encode_ts,
    decode_ts=_decode_ts,
    encode_bool=int,
    decode_bool=lambda value: bool(integer(value)),
)

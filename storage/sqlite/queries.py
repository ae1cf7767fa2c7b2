"""The SQL of the SQLite backend: reading and writing a user's rows (state, processed
requests, history), built from the table descriptions of storage.rows. Every function
runs inside the caller's transaction on the caller's connection."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from service.domain.account import AccountState, Household
from storage.apply import KeptRequest, Replay
from storage.feed import Change, ChangeBatch
from storage.repository import (
    HistoryEntry,
    IdempotencyKey,
    household_membership,
)
from storage.rows import (
    CHILD_TABLES,
    HISTORY,
    POSITION,
    PROCESSED_REQUESTS,
    REPLAY_COLUMNS,
    SUBSCRIPTIONS,
    USER_ID,
    USERS,
    ChildTable,
    integer,
    names,
    text,
)
from storage.sqlite.codec import CODEC


def _list(columns: Iterable[str]) -> str:
    return ", ".join(columns)


def _insert(table: str, columns: Sequence[str]) -> str:
    return f"INSERT INTO {table} ({_list(columns)}) VALUES ({', '.join('?' for _ in columns)})"


def _select_children(table: ChildTable[Any]) -> str:
    return (
        f"SELECT {_list(table.column_names)} FROM {table.name}"
        f" WHERE {USER_ID} = ? ORDER BY {POSITION}"
    )


def _select_account() -> str:
    """A user's whole state in one statement: the user row (tag 0) and the rows of each
    child table (tag 1 + its index in CHILD_TABLES), padded with NULLs to one width."""
    tables: list[tuple[str, tuple[str, ...], str]] = [
        (USERS.name, USERS.column_names, "0"),
        *((table.name, table.column_names, POSITION) for table in CHILD_TABLES),
    ]
    width = max(len(columns) for _, columns, _ in tables)
    parts = []
    for tag, (name, columns, order) in enumerate(tables):
        padding = ", NULL" * (width - len(columns))
        parts.append(
            f"SELECT {tag}, {order}, {_list(columns)}{padding} FROM {name} WHERE {USER_ID} = ?1"
        )
    return " UNION ALL ".join(parts) + " ORDER BY 1, 2"


_SELECT_ACCOUNT = _select_account()
_USER_COLUMNS = len(USERS.column_names)
_CHILD_COLUMNS = tuple(len(table.column_names) for table in CHILD_TABLES)
_UPSERT_USER = (
    _insert(USERS.name, (USER_ID, *USERS.column_names))
    + f" ON CONFLICT ({USER_ID}) DO UPDATE SET "
    + ", ".join(f"{name} = excluded.{name}" for name in USERS.column_names)
)
_SELECT_CHILDREN = {table.name: _select_children(table) for table in CHILD_TABLES}
_SELECT_VERSION = f"SELECT version FROM {USERS.name} WHERE {USER_ID} = ?"
_DELETE_CHILDREN = {
    table.name: f"DELETE FROM {table.name} WHERE {USER_ID} = ?" for table in CHILD_TABLES
}
_INSERT_CHILDREN = {table.name: _insert(table.name, table.write_columns) for table in CHILD_TABLES}
_SELECT_REPLAY = (
    f"SELECT {_list(names(REPLAY_COLUMNS))} FROM {PROCESSED_REQUESTS.name}"
    f" WHERE {USER_ID} = ? AND kind = ? AND request_id = ?"
)
_INSERT_REQUEST = _insert(PROCESSED_REQUESTS.name, (USER_ID, *PROCESSED_REQUESTS.column_names))
# `seq` (AUTOINCREMENT) is the order of appending.
_SELECT_HISTORY = (
    f"SELECT {_list(HISTORY.column_names)} FROM {HISTORY.name} WHERE {USER_ID} = ? ORDER BY seq"
)
_INSERT_HISTORY = _insert(HISTORY.name, (USER_ID, *HISTORY.column_names))


# -- the state ---------------------------------------------------------------------------


def read_account(connection: sqlite3.Connection, user_id: str) -> AccountState:
    """The user's state, read with one statement."""
    rows = connection.execute(_SELECT_ACCOUNT, (user_id,)).fetchall()
    if not rows or rows[0][0] != 0:
        return AccountState.new(user_id)
    children: list[list[Sequence[Any]]] = [[] for _ in CHILD_TABLES]
    for row in rows[1:]:
        index = row[0] - 1
        children[index].append(row[2 : 2 + _CHILD_COLUMNS[index]])
    return CODEC.account(user_id, rows[0][2 : 2 + _USER_COLUMNS], children)


def _read_children(
    connection: sqlite3.Connection, table: ChildTable[Any], user_id: str
) -> list[Any]:
    return connection.execute(_SELECT_CHILDREN[table.name], (user_id,)).fetchall()


def read_household(connection: sqlite3.Connection, account: AccountState) -> Household | None:
    """The household of `account` (see household_membership), with the manager's
    subscriptions and version read in the caller's transaction."""
    membership = household_membership(account)
    if membership is None:
        return None
    manager_user_id = membership.manager_user_id
    rows = _read_children(connection, SUBSCRIPTIONS, manager_user_id)
    version = connection.execute(_SELECT_VERSION, (manager_user_id,)).fetchone()
    return Household(
        membership.household_id,
        manager_user_id,
        SUBSCRIPTIONS.read(CODEC, rows),
        0 if version is None else int(version[0]),
    )


def write_account(
    connection: sqlite3.Connection, account: AccountState, current: AccountState | None = None
) -> None:
    """Stores `account` as is (version included), replacing the user's rows of each child
    table; with `current` (the stored state it replaces, read in this transaction), a
    table whose rows would be the same is left alone (a grant does not rewrite the kept
    subscription events)."""
    user_id = account.user_id
    connection.execute(_UPSERT_USER, (user_id, *CODEC.user_row(account)))
    for table in CHILD_TABLES:
        rows = table.rows(CODEC, account)
        if current is not None and table.rows(CODEC, current) == rows:
            continue
        connection.execute(_DELETE_CHILDREN[table.name], (user_id,))
        connection.executemany(_INSERT_CHILDREN[table.name], rows)


# -- processed requests and history ------------------------------------------------------


class Write:
    """The WriteTransaction (storage.apply) of one write transaction on `connection`."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def read(self, user_id: str, key: IdempotencyKey) -> tuple[AccountState, Replay | None]:
        row = self._connection.execute(_SELECT_REPLAY, (user_id, key.kind, key.id)).fetchone()
        seen = None if row is None else Replay(text(row[0]), text(row[1]), integer(row[2]))
        return read_account(self._connection, user_id), seen

    def write_account(self, current: AccountState, stored: AccountState) -> None:
        write_account(self._connection, stored, current)

    def publish(self, user_id: str, changes: Sequence[Change]) -> None:
        publish_changes(self._connection, changes)

    def keep_request(self, user_id: str, request: KeptRequest) -> None:
        row = CODEC.request_row(request.key, request.response, request.version, request.recorded_at)
        self._connection.execute(_INSERT_REQUEST, (user_id, *row))

    def append_history(self, user_id: str, entries: Sequence[HistoryEntry]) -> None:
        self._connection.executemany(
            _INSERT_HISTORY, [(user_id, *CODEC.history_row(entry)) for entry in entries]
        )


def read_history(connection: sqlite3.Connection, user_id: str) -> list[HistoryEntry]:
    rows = connection.execute(_SELECT_HISTORY, (user_id,)).fetchall()
    return [CODEC.history_entry(row) for row in rows]


# -- the change feed ---------------------------------------------------------------------

# How many of the newest changes the feed keeps: a reader further behind than this (at
# 1,000 writes/s, 100 s) finds a gap and drops its whole cache. Trimmed every
# FEED_TRIM_EVERY changes, so the table holds at most FEED_RETAINED + FEED_TRIM_EVERY rows.
FEED_RETAINED = 100_000
FEED_TRIM_EVERY = 1024
_INSERT_CHANGE = "INSERT INTO user_changes (user_id, version) VALUES (?, ?)"
_SELECT_CHANGES = (
    "SELECT seq, user_id, version FROM user_changes WHERE seq > ? ORDER BY seq LIMIT ?"
)
_LAST_SEQ = "SELECT seq FROM sqlite_sequence WHERE name = 'user_changes'"


def publish_changes(connection: sqlite3.Connection, changes: Iterable[Change]) -> None:
    """Appends `changes` to the feed, in the caller's write transaction."""
    for change in changes:
        seq = connection.execute(_INSERT_CHANGE, (change.user_id, change.version)).lastrowid
        if seq is not None and seq % FEED_TRIM_EVERY == 0:
            connection.execute("DELETE FROM user_changes WHERE seq <= ?", (seq - FEED_RETAINED,))


def last_change(connection: sqlite3.Connection) -> int:
    """The seq of the newest change ever committed (0: none)."""
    row = connection.execute(_LAST_SEQ).fetchone()
    return int(row[0]) if row is not None else 0


def read_changes(connection: sqlite3.Connection, after: int, limit: int) -> ChangeBatch:
    """The changes after seq `after` (see storage.feed.ChangeFeed.read_changes)."""
    rows = connection.execute(_SELECT_CHANGES, (after, limit)).fetchall()
    if not rows:
        last = last_change(connection)
        # Behind the newest seq ever committed: the database was replaced or reset.
        # Otherwise the position stays: `last` is read by another statement, after
        # which a change may have committed that the SELECT above did not see.
        return ChangeBatch((), str(last) if last < after else str(after), gap=last < after)
    changes = tuple(Change(row[1], row[2]) for row in rows)
    # Committed seqs are contiguous: a first row past after + 1 means rows were trimmed.
    return ChangeBatch(changes, str(rows[-1][0]), gap=rows[0][0] > after + 1)

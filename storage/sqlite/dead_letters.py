"""Dead letters on SQLite: the dead_letters table of migration 0005, in the accounts' database
file (storage.dead_letters holds the letter and the store's contract)."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from service.domain.errors import StoreUnavailable
from storage.dead_letters import DeadLetter
from storage.sqlite.codec import decode_ts, encode_ts

_COLUMNS = "source, delivery_id, payload, reason, detail, received_at, attempts, resolved_at"


class SqliteDeadLetters:
    """The dead_letters table of an existing (migrated) SQLite database. A connection per
    call: dead letters are rare, and this keeps clear of the account repository's own
    connections."""

    def __init__(self, path: str, busy_timeout_seconds: float = 5.0) -> None:
        self._path = path
        self._timeout = busy_timeout_seconds

    def _connect(self) -> sqlite3.Connection:
        try:
            # mode=rw: never creates the file (migrating creates it).
            return sqlite3.connect(f"file:{self._path}?mode=rw", uri=True, timeout=self._timeout)
        except sqlite3.Error as error:
            raise StoreUnavailable(f"dead letters: cannot open {self._path}: {error}") from error

    def _run(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        connection = self._connect()
        try:
            with connection:
                return connection.execute(sql, parameters).fetchall()
        except sqlite3.Error as error:
            raise StoreUnavailable(f"dead letters: {error}") from error
        finally:
            connection.close()

    def keep(self, letter: DeadLetter) -> None:

        self._run(
            f"INSERT INTO dead_letters ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, 1, NULL) "
            "ON CONFLICT (source, delivery_id) DO UPDATE SET payload = excluded.payload, "
            "reason = excluded.reason, detail = excluded.detail, "
            "attempts = dead_letters.attempts + 1, resolved_at = NULL",
            (
                letter.source,
                letter.delivery_id,
                letter.payload,
                letter.reason,
                letter.detail,
                encode_ts(letter.received_at),
            ),
        )

    @staticmethod
    def _letter(row: tuple[Any, ...]) -> DeadLetter:

        return DeadLetter(
            source=row[0],
            delivery_id=row[1],
            payload=row[2],
            reason=row[3],
            detail=row[4],
            received_at=decode_ts(row[5]),
            attempts=int(row[6]),
            resolved_at=None if row[7] is None else decode_ts(row[7]),
        )

    def list(self, *, include_resolved: bool = False, limit: int = 100) -> list[DeadLetter]:
        where = "" if include_resolved else "WHERE resolved_at IS NULL "
        rows = self._run(
            f"SELECT {_COLUMNS} FROM dead_letters {where}"
            "ORDER BY received_at, source, delivery_id LIMIT ?",
            (limit,),
        )
        return [self._letter(row) for row in rows]

    def get(self, source: str, delivery_id: str) -> DeadLetter | None:
        rows = self._run(
            f"SELECT {_COLUMNS} FROM dead_letters WHERE source = ? AND delivery_id = ?",
            (source, delivery_id),
        )
        return self._letter(rows[0]) if rows else None

    def resolve(self, source: str, delivery_id: str, at: datetime) -> bool:

        rows = self._run(
            "UPDATE dead_letters SET resolved_at = ? WHERE source = ? AND delivery_id = ? "
            "AND resolved_at IS NULL RETURNING 1",
            (encode_ts(at), source, delivery_id),
        )
        return bool(rows)

    def open_count(self) -> int:
        rows = self._run("SELECT COUNT(*) FROM dead_letters WHERE resolved_at IS NULL")
        return int(rows[0][0])

    def close(self) -> None:
        pass

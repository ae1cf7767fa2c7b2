"""Dead letters: store notifications that could not become events, kept with their reason
(docs/INGESTION.md). One per delivery (source, the store's delivery id); a redelivery of
the same notification counts an attempt instead of a new letter. Listed and replayed by
`entitlements dead-letters`; a replay that records the event resolves the letter.

Backends: memory (a dict, per process), SQLite (the `dead_letters` table of migration
0005, same database file as the accounts) and Spanner (the `DeadLetters` table), chosen
by the storage URL like the account repository (storage.urls.open_dead_letters)."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from service.domain.errors import StoreUnavailable


@dataclass(frozen=True, slots=True)
class DeadLetter:
    source: str  # "app_store", "stripe", "google_play"
    delivery_id: str  # notificationUUID, Stripe event id, Pub/Sub messageId
    payload: str  # the verified, decoded notification (JSON)
    reason: str  # service.domain.ingestion.DeadLetterReason
    detail: str
    received_at: datetime
    attempts: int = 1
    resolved_at: datetime | None = None


class DeadLetterStore(Protocol):
    def keep(self, letter: DeadLetter) -> None:
        """Stores the letter, or counts another attempt of a stored one (its reason and
        payload updated; a resolved letter opens again)."""

    def list(self, *, include_resolved: bool = False, limit: int = 100) -> list[DeadLetter]:
        """The letters, oldest first (open ones only unless include_resolved)."""

    def get(self, source: str, delivery_id: str) -> DeadLetter | None: ...

    def resolve(self, source: str, delivery_id: str, at: datetime) -> bool:
        """Marks the letter resolved; False when there is no open letter of that id."""

    def open_count(self) -> int: ...

    def close(self) -> None: ...


class MemoryDeadLetters:
    def __init__(self) -> None:
        self._letters: dict[tuple[str, str], DeadLetter] = {}
        self._lock = threading.Lock()

    def keep(self, letter: DeadLetter) -> None:
        with self._lock:
            key = (letter.source, letter.delivery_id)
            known = self._letters.get(key)
            if known is not None:
                letter = replace(letter, received_at=known.received_at, attempts=known.attempts + 1)
            self._letters[key] = replace(letter, resolved_at=None)

    def list(self, *, include_resolved: bool = False, limit: int = 100) -> list[DeadLetter]:
        with self._lock:
            letters = sorted(self._letters.values(), key=lambda x: x.received_at)
        return [x for x in letters if include_resolved or x.resolved_at is None][:limit]

    def get(self, source: str, delivery_id: str) -> DeadLetter | None:
        with self._lock:
            return self._letters.get((source, delivery_id))

    def resolve(self, source: str, delivery_id: str, at: datetime) -> bool:
        with self._lock:
            letter = self._letters.get((source, delivery_id))
            if letter is None or letter.resolved_at is not None:
                return False
            self._letters[(source, delivery_id)] = replace(letter, resolved_at=at)
            return True

    def open_count(self) -> int:
        with self._lock:
            return sum(1 for x in self._letters.values() if x.resolved_at is None)

    def close(self) -> None:
        pass


_SQLITE_COLUMNS = "source, delivery_id, payload, reason, detail, received_at, attempts, resolved_at"


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
        from storage.sqlite.codec import encode_ts

        self._run(
            f"INSERT INTO dead_letters ({_SQLITE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, 1, NULL) "
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
        from storage.sqlite.codec import decode_ts

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
            f"SELECT {_SQLITE_COLUMNS} FROM dead_letters {where}"
            "ORDER BY received_at, source, delivery_id LIMIT ?",
            (limit,),
        )
        return [self._letter(row) for row in rows]

    def get(self, source: str, delivery_id: str) -> DeadLetter | None:
        rows = self._run(
            f"SELECT {_SQLITE_COLUMNS} FROM dead_letters WHERE source = ? AND delivery_id = ?",
            (source, delivery_id),
        )
        return self._letter(rows[0]) if rows else None

    def resolve(self, source: str, delivery_id: str, at: datetime) -> bool:
        from storage.sqlite.codec import encode_ts

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

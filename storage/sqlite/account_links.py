"""Store accounts linked to users on SQLite: the store_accounts table of migration 0007
(storage.account_links has the contract)."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from service.domain.errors import StoreUnavailable


class SqliteAccountLinks:
    """The store_accounts table of an existing (migrated) SQLite database; a connection
    per call (links are written rarely, read once per unlinked notification)."""

    def __init__(self, path: str, busy_timeout_seconds: float = 5.0) -> None:
        self._path = path
        self._timeout = busy_timeout_seconds

    def _run(self, sql: str, parameters: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        try:
            connection = sqlite3.connect(
                f"file:{self._path}?mode=rw", uri=True, timeout=self._timeout
            )
        except sqlite3.Error as error:
            raise StoreUnavailable(f"account links: cannot open {self._path}: {error}") from error
        try:
            with connection:
                return connection.execute(sql, parameters).fetchall()
        except sqlite3.Error as error:
            raise StoreUnavailable(f"account links: {error}") from error
        finally:
            connection.close()

    def link(self, store: str, account_id: str, user_id: str, at: datetime) -> None:
        from storage.sqlite.codec import encode_ts

        self._run(
            "INSERT INTO store_accounts (store, account_id, user_id, linked_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (store, account_id) DO UPDATE SET "
            "user_id = excluded.user_id, linked_at = excluded.linked_at",
            (store, account_id, user_id, encode_ts(at)),
        )

    def user_for(self, store: str, account_id: str) -> str | None:
        rows = self._run(
            "SELECT user_id FROM store_accounts WHERE store = ? AND account_id = ?",
            (store, account_id),
        )
        return str(rows[0][0]) if rows else None

    def close(self) -> None:
        pass
